"""The ``demoe-eval`` command line: parse options, call the functions that do the work, print.

Heavy libraries (torch, pyiqa, mlflow) are imported inside the commands so that ``--help`` is fast.
"""

import sys
from pathlib import Path

import click

from demoe.errors import DemoeError


class DemoeGroup(click.Group):
    """Turns DemoeError into a one-line message and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DemoeError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=DemoeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="demoe-eval")
def main() -> None:
    """Evaluate, finetune and compare DeMoE all-in-one deblurring models."""


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# ----------------------------------------------------------------------------- zoo


@main.group(cls=DemoeGroup)
def zoo() -> None:
    """The model zoo: list, inspect and download models."""


@zoo.command("list")
@click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files.",
)
def zoo_list(zoo_dirs: tuple[Path, ...]) -> None:
    """Table of every model: parameters, GFLOPs at 256x256, k, checkpoint availability."""
    from demoe import zoo as zoo_lib

    entries = zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs))
    rows = []
    for entry in entries.values():
        stats = zoo_lib.model_stats(entry)
        found = next((p for p in zoo_lib.checkpoint_candidates(entry) if p.is_file()), None)
        rows.append(
            {
                "name": entry.name,
                "arch": entry.arch,
                "params": f"{stats['params'] / 1e6:.2f}M",
                "GFLOPs@256": f"{stats['gflops']:.2f}",
                "k": entry.k_used if entry.k_used is not None else "-",
                "checkpoint": "available"
                if found
                else ("missing" if entry.checkpoint else "none (train it)"),
            }
        )
    _print_table(rows, ["name", "arch", "params", "GFLOPs@256", "k", "checkpoint"])


@zoo.command("show")
@click.argument("name")
@click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files.",
)
def zoo_show(name: str, zoo_dirs: tuple[Path, ...]) -> None:
    """Everything about one model."""
    import yaml

    from demoe import zoo as zoo_lib

    entry = zoo_lib.get_entry(name, zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs)))
    stats = zoo_lib.model_stats(entry)
    ckpt = entry.checkpoint
    doc = {
        "name": entry.name,
        "arch": entry.arch,
        "kwargs": entry.kwargs,
        "description": entry.description,
        "params": stats["params"],
        "gflops_256": round(stats["gflops"], 3),
        "defined_in": str(entry.source),
        "checkpoint": None
        if ckpt is None
        else {
            **{k: v for k, v in vars(ckpt).items() if v is not None},
            "found_at": next((str(p) for p in zoo_lib.checkpoint_candidates(entry) if p.is_file()), None),
            "looked_in": [str(p) for p in zoo_lib.checkpoint_candidates(entry)],
        },
    }
    if entry.paper:
        doc["paper"] = entry.paper
    if entry.info:
        doc["info"] = entry.info
    click.echo(yaml.safe_dump(doc, sort_keys=False, width=120).rstrip())


@zoo.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if a verified file exists.")
@click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files.",
)
def zoo_fetch(name: str, force: bool, zoo_dirs: tuple[Path, ...]) -> None:
    """Download a model's checkpoint into $DEMOE_HOME/checkpoints, verifying size and sha256."""
    from demoe import zoo as zoo_lib

    entry = zoo_lib.get_entry(name, zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs)))
    path = zoo_lib.fetch(entry, progress=sys.stderr.isatty() or True, force=force)
    click.echo(f"{entry.name}: {path} (sha256 verified)")


if __name__ == "__main__":
    main()
