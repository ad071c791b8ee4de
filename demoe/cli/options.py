"""The click options more than one command takes, each defined once, and the little helpers every
command shares (comma lists, printed tables, help examples). Light imports only."""

from pathlib import Path

import click

from demoe.errors import DemoeError


def one_line(error: Exception) -> click.ClickException:
    """A user-facing failure as click's one ``Error:`` line: a ``DemoeError``'s own message, or a file
    system error (a read-only or full disk, a folder one may not write) naming its path."""
    if isinstance(error, DemoeError):
        return click.ClickException(str(error))
    assert isinstance(error, OSError)
    where = error.filename if error.filename is not None else "a file"
    return click.ClickException(
        f"{where}: {error.strerror or error}; check that the folder exists, is writable and has space"
    )


class DemoeCommand(click.Command):
    """A command whose ``DemoeError`` or file system error is one line on stderr and exit code 1,
    never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DemoeError, OSError) as e:
            raise one_line(e) from None


class DemoeGroup(click.Group):
    command_class = DemoeCommand
    group_class = type

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DemoeError, OSError) as e:
            raise one_line(e) from None


def examples(*lines: str) -> str:
    """A help epilog of example command lines (click keeps ``\\b`` paragraphs as written)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def int_csv(option: str, value: str | None) -> list[int] | None:
    try:
        numbers = [int(v) for v in csv(value)] if value else None
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected comma-separated integers, e.g. 1,4", param_hint=option
        ) from None
    if numbers is not None and min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: every value must be at least 1", param_hint=option)
    return numbers


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


tracking_uri = click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI: a sqlite:/// file, a postgresql:// database or an http(s):// server "
    "[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].",
)
mlflow_experiment = click.option(
    "--experiment",
    envvar="MLFLOW_EXPERIMENT_NAME",
    default=None,
    help="MLflow experiment name [default: $MLFLOW_EXPERIMENT_NAME, else demoe-eval].",
)
tracking_switch = click.option(
    "--tracking/--no-tracking", default=True, show_default=True, help="Log to MLflow."
)
zoo_dirs = click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files (repeatable), searched after the shipped zoo and $DEMOE_HOME/zoo.",
)
bench_dirs = click.option(
    "--bench-dir",
    "bench_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of benchmark YAML files (repeatable).",
)
data_root = click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding the benchmarks' data [default: $DEMOE_DATA, else ./data].",
)
weights_dir = click.option(
    "--weights-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding metric weights, a TORCH_HOME [default: $TORCH_HOME when it has them, else "
    "$DEMOE_HOME/weights].",
)
precision = click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Autocast precision of the model (the router stays fp32); fp16 needs CUDA.",
)
compile_mode = click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="torch.compile the model (auto: on CUDA only, where compiling pays back).",
)
device = click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
nproc = click.option(
    "--nproc", type=click.IntRange(min=1), default=None, help="Launch this many processes with torchrun."
)
checkpoint = click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file to load instead of the zoo's.",
)
param_key = click.option(
    "--param-key",
    default=None,
    metavar="KEY",
    help="The checkpoint's entry holding the weights, e.g. params_ema in a BasicSR file that also holds "
    "params [default: the zoo entry's checkpoint.param_key, else params, params_ema, state_dict, model, "
    "whichever comes first].",
)
cast_weights = click.option(
    "--cast-weights",
    is_flag=True,
    help="Convert checkpoint tensors stored in another dtype than the model's (float16 weights into the "
    "float32 model); without it such a checkpoint is refused.",
)
experiment_file = click.option(
    "-e",
    "--experiment-file",
    type=click.Path(path_type=Path),
    default=None,
    help="An experiments/*.yaml file, by path or by the name of a shipped one.",
)
