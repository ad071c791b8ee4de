"""The ``demoe-eval`` command line: one module per command group, each command thin (options -> a
frozen config -> one library call -> print).

Commands are imported when they run (or show their own help), so that ``demoe-eval --help`` imports
neither torch, pyiqa nor mlflow; the listing below carries each command's one-line help.
"""

import importlib

import click

from demoe.cli.options import DemoeGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("demoe.cli.run:run", "Evaluate a zoo model on a benchmark per routing mode, logged to MLflow."),
    "restore": (
        "demoe.cli.restore:restore",
        "Restore your own captures (no sharp reference): the router decides or a task is forced.",
    ),
    "log": (
        "demoe.cli.run:log",
        "Log a finished results folder to MLflow (once; a second time does nothing).",
    ),
    "finetune": (
        "demoe.cli.finetune:finetune",
        "Finetune or train a model; its best checkpoint joins the zoo.",
    ),
    "report": ("demoe.cli.report:report", "Tables, figures and one HTML page from the runs in MLflow."),
    "ui": ("demoe.cli.ui:ui", "The MLflow UI on the store that run, finetune and report use."),
    "zoo": ("demoe.cli.zoo:zoo", "The model zoo: list, inspect and download models."),
    "bench": ("demoe.cli.bench:bench", "Benchmarks: list, show, check, and make your own from a PSF."),
    "metrics": ("demoe.cli.metrics:metrics", "Which metrics can run here; real LPIPS weights offline."),
    "perf": ("demoe.cli.perf:perf", "Our inference path against the published forward, side by side."),
}


class LazyCommands(DemoeGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(
    cls=LazyCommands,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nFirst steps:\n  demoe-eval metrics fetch lpips && demoe-eval run\n  demoe-eval report && demoe-eval ui",
)
@click.version_option(package_name="demoe-eval")
def main() -> None:
    """Evaluate, finetune and compare DeMoE all-in-one deblurring models."""
