"""``demoe-eval restore``: restore your own captures (no sharp reference), the router deciding or a task
forced; what the router decided per image in a table."""

import os
import sys
from pathlib import Path

import click

from demoe.cli import options
from demoe.errors import DemoeError
from demoe.jobs.restore import ROUTINGS, RestoreConfig, RestoreResult, restore_captures
from demoe.registry.zoo import DEFAULT_MODEL
from demoe.runtime import launch_torchrun
from demoe.tracking import mlflow_runs
from demoe.vocab import TASKS


class RestoreFailed(DemoeError):
    pass


def print_result(result: RestoreResult) -> None:
    """One line per image: its size, the task the router predicts, how sure it is, the seconds."""
    by_file: dict[str, list] = {}
    for row in result.rows:
        by_file.setdefault(row.file, []).append(row)
    table = []
    for file, rows in by_file.items():
        first = rows[0]
        table.append(
            {
                "file": file,
                "size": f"{first.width}x{first.height}",
                "bits": first.bits,
                "predicted task": first.pred_task or "-",
                "confidence": f"{100 * first.confidence:.1f}%" if first.confidence is not None else "-",
                "seconds": f"{sum(r.seconds for r in rows):.3f}",
            }
        )
    options.print_table(table, ["file", "size", "bits", "predicted task", "confidence", "seconds"])
    forced = [m for m in result.modes if m != "auto"]
    routing = "auto" if not forced else "all" if "auto" in result.modes else f"{forced[0]} forced"
    click.echo(
        f"{result.restored} restored, {result.skipped} done before, {len(result.failed)} unreadable; "
        f"routing {routing}; outputs in {result.out}"
    )


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval restore photo.png",
        "demoe-eval restore captures/ --out restored --tile 512",
        "demoe-eval restore 'shots/**/*.tif' --routing defocus --compare",
        "demoe-eval restore -i a.jpg -i b.jpg -t all --compare --tracking",
    ),
)
@click.argument("inputs", nargs=-1)
@click.option("-i", "--input", "more_inputs", multiple=True, help="An input, as INPUTS (repeatable).")
@click.option(
    "--model", default=None, help=f"Zoo model name [default: {DEFAULT_MODEL}, the embedded default]."
)
@click.option(
    "-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Checkpoint file to load."
)
@options.param_key
@options.cast_weights
@click.option(
    "-t",
    "--routing",
    "--task",
    type=click.Choice(ROUTINGS),
    metavar="auto|TASK|all",
    default="auto",
    show_default=True,
    help=f"auto (the router decides), a task forced on every image ({', '.join(TASKS)}), or all: auto "
    "and every task.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("restored"),
    show_default=True,
    help="Folder of the restored images (each at its input's relative path, as PNG), the table and strips.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=16),
    default=None,
    help="Restore images larger than this (and than 1024 px, where the routing decision is made on the "
    "whole image) in tiles of this size, one routing decision per image, as run does.",
)
@click.option(
    "--tile-overlap",
    type=click.IntRange(min=0),
    default=32,
    show_default=True,
    help="Least overlap of tiles.",
)
@options.precision
@options.compile_mode
@options.device
@click.option(
    "--compare",
    is_flag=True,
    help="Also write a labelled strip per image under OUT/compare: input | restored (| each task with -t all).",
)
@options.zoo_dirs
@options.mlflow_experiment
@options.tracking_uri
@click.option(
    "--tracking/--no-tracking",
    default=False,
    show_default=True,
    help="Log the table and strips to MLflow as a run tagged demoe.kind=restore.",
)
@options.nproc
def restore(inputs, more_inputs, tracking, tracking_uri, experiment, nproc, **given) -> None:
    """Restore image files, folders (recursively) or glob patterns at full resolution: 8- and 16-bit
    PNG out as in, the router's decision per image in OUT/restore.csv. A rerun with the same model,
    checkpoint and options skips the images already restored; an unreadable file is skipped, named,
    and makes the exit code 1 once the others are done."""
    if nproc and nproc > 1:
        raise SystemExit(launch_torchrun(nproc, "restore", sys.argv[2:]))
    cfg = RestoreConfig(
        inputs=(*inputs, *more_inputs),
        model=given["model"] or DEFAULT_MODEL,
        checkpoint=str(given["checkpoint"]) if given["checkpoint"] else None,
        param_key=given["param_key"],
        cast_weights=given["cast_weights"],
        routing=given["routing"],
        out=given["out"],
        tile=given["tile"],
        tile_overlap=given["tile_overlap"],
        precision=given["precision"],
        compile=given["compile_mode"],
        device=given["device"],
        compare=given["compare"],
        zoo_dirs=tuple(given["zoo_dirs"]),
    )
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if tracking and main_rank:
        mlflow_runs.check_server(tracking_uri)
    result = restore_captures(cfg, progress=True, say=lambda line: click.echo(line, err=True))
    if result is None:
        return
    print_result(result)
    click.echo(f"table: {result.table_files[0]}")
    if tracking and result.rows:
        config = cfg.to_dict() | {"checkpoint_sha256": result.key["checkpoint_sha256"]}
        metrics = {"images": result.images, "seconds_per_image": result.seconds_per_image}
        artifacts = [*result.table_files, *([result.compare_dir] if result.compare_dir else [])]
        run_id = mlflow_runs.log_restore(result.out, config, metrics, artifacts, tracking_uri, experiment)
        click.echo(f"mlflow run: {run_id}")
    if result.failed:
        names = ", ".join(file for file, _ in result.failed[:3]) + (", ..." if len(result.failed) > 3 else "")
        raise RestoreFailed(
            f"{len(result.failed)} of {len(result.failed) + result.images} images "
            f"could not be read ({names}); the others are restored in {result.out}"
        )
