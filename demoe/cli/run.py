"""``demoe-eval run`` (one evaluation, or a sweep file's) and ``demoe-eval log`` (a results folder to MLflow)."""

import os
import sys
from pathlib import Path

import click

from demoe.cli import options
from demoe.config import load_config
from demoe.jobs.evaluate import EvalConfig, evaluate
from demoe.jobs.sweep import expand_sweep
from demoe.metrics.scorers import NEEDS_SHARP
from demoe.records import EvalResult
from demoe.registry.benchmarks import PAPER_PROTOCOLS
from demoe.registry.zoo import DEFAULT_MODEL
from demoe.runtime import launch_torchrun
from demoe.tracking import mlflow_runs
from demoe.vocab import TASKS


def print_result(result: EvalResult) -> None:
    """The summary table of one evaluation: one row per routing mode."""
    metric_names = result.metric_names
    rows = []
    for mode in result.routing_modes:
        summary = result.summary(mode)
        if summary is None:
            continue
        row = {"routing": mode, "images": summary.images}
        for name in metric_names:
            value = summary.metrics.get(name)
            digits = 4 if name.startswith(("ssim", "lpips")) else 2
            row[name] = "n/a" if value is None else f"{value:.{digits}f}"
        accuracy, seconds = summary.routing_accuracy, summary.seconds_per_image
        row["routing_acc"] = "-" if accuracy is None else f"{100 * accuracy:.1f}%"
        row["s/img"] = "-" if seconds is None else f"{seconds:.4f}"
        rows.append(row)
    unpaired = result.bench_info.unpaired
    count = f"{result.bench_info.pairs} {'images, no sharp ones' if unpaired else 'pairs'}"
    click.echo(f"{result.model} on {result.bench} ({result.split}, {count})")
    options.print_table(rows, ["routing", "images", *metric_names, "routing_acc", "s/img"])
    for name, reason in result.metrics_unavailable.items():
        if reason != NEEDS_SHARP:
            click.echo(f"{name}: not computed: {reason}", err=True)
    if unpaired:
        print_unpaired_notes(result)
    if result.bench_info.protocol_note:
        click.echo(f"note: {result.bench_info.protocol_note}", err=True)
    if result.config.get("task"):
        click.echo(f"note: every pair labelled {result.config['task']} for this run (--task)", err=True)
    bench = result.bench_info
    if bench.partial:
        click.echo(f"note: a partial benchmark: {bench.pairs} of the {bench.expected_pairs} pairs", err=True)
    if bench.skipped_bad_pairs:
        skipped = ", ".join(bench.skipped_bad_pairs[:5]) + (
            ", ..." if len(bench.skipped_bad_pairs) > 5 else ""
        )
        click.echo(f"note: {len(bench.skipped_bad_pairs)} bad pair(s) left out: {skipped}", err=True)
    paper_note = paper_protocol_note(result)
    if paper_note:
        click.echo(f"note: {paper_note}", err=True)


def print_unpaired_notes(result: EvalResult) -> None:
    """A benchmark without sharp images: what the router chose, and one line on what was not scored."""
    auto = result.summary("auto")
    if auto is not None and auto.decisions:
        choices = ", ".join(f"{task} {n}" for task, n in auto.decisions.items())
        click.echo(f"router's choices (auto): {choices}; comparison strips in the results folder's strips/")
    asked = [name for name, reason in result.metrics_unavailable.items() if reason == NEEDS_SHARP]
    not_computable = f": {', '.join(asked)} not computable for this benchmark" if asked else ""
    click.echo(
        f"note: {result.bench} has no sharp images, so it is scored with no-reference metrics only "
        f"({', '.join(result.metric_names) or 'none could run here'}); full-reference metrics (PSNR, SSIM, "
        f"LPIPS) need sharp images{not_computable}",
        err=True,
    )


def paper_protocol_note(result: EvalResult) -> str | None:
    """Which columns score as the benchmark's papers do (its manifest's paper_protocol), and how to add
    the ones that were not computed."""
    paper = result.protocol.get("paper_protocol")
    if paper not in PAPER_PROTOCOLS:
        return None
    colors = result.protocol.get("metric_color") or {}
    same = [m for m in PAPER_PROTOCOLS[paper] if colors.get(m) == paper]
    missing = [m for m in PAPER_PROTOCOLS[paper] if m not in colors]
    text = f"{result.bench}'s papers score PSNR and SSIM on {paper} (its paper_protocol)"
    if same:
        text += f"; the columns to compare with them: {', '.join(same)}"
    if missing:
        text += f"; add --metrics {','.join([*result.metric_names, *missing])} for {', '.join(missing)}"
    return text


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval run",
        "demoe-eval run --model DeMoE --bench DRMI --routing auto,defocus",
        "demoe-eval run --model DeMoE-DRMI --bench DRMI --task defocus --routing oracle,auto",
        "demoe-eval run -e experiments/tiny_synth_k_sweep.yaml",
    ),
)
@click.option(
    "--model", default=None, help=f"Zoo model name [default: {DEFAULT_MODEL}, the embedded default]."
)
@click.option(
    "--bench",
    default="aio-synth",
    show_default=True,
    help="Benchmark name, subset (aio-synth/defocus) or a folder with blur/ and sharp/ (blurred images "
    "alone: scored without reference).",
)
@click.option("--split", default=None, help="Benchmark split [default: its test split].")
@click.option(
    "--routing",
    default=None,
    help="Comma list of auto, oracle, all or task names [default: auto,oracle when the benchmark is labelled, else auto].",
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default=None,
    help="Label every pair of an unlabelled benchmark (DRMI) with this task for this run, so that oracle "
    "forces its experts and auto is scored against it (recorded in results.json and MLflow).",
)
@click.option(
    "--metrics",
    default=None,
    help="Comma list of pyiqa metric names, or psnry-ycbcr and ssim-ycbcr (BasicSR's Y channel) "
    "[default: psnr,ssimc,lpips; on a benchmark without sharp images, the no-reference niqe,brisque,piqe].",
)
@options.checkpoint
@options.param_key
@options.cast_weights
@click.option(
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="Experts per MoE block (overrides the zoo entry's k_used).",
)
@options.device
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Images per forward (equal sizes only).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes [0 on a CPU, whose cores the forward uses; 2 beside a GPU].",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N pairs (smoke runs)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tile",
    type=click.IntRange(min=16),
    default=None,
    help="Restore images larger than this in tiles of this size.",
)
@click.option("--tile-overlap", type=click.IntRange(min=0), default=32, show_default=True)
@options.precision
@options.compile_mode
@options.mlflow_experiment
@options.tracking_uri
@options.tracking_switch
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Results folder [default: results/MODEL@BENCH].",
)
@click.option(
    "--save-images",
    type=click.IntRange(min=0),
    default=0,
    is_flag=False,
    flag_value=2,
    help="Save the blurred, restored and sharp images of the first N images of each blur label (of the "
    "first N where the benchmark has no labels; 2 when given without N).",
)
@options.data_root
@options.bench_dirs
@options.zoo_dirs
@options.weights_dir
@click.option("--allow-download", is_flag=True, help="Let metrics download their weights.")
@click.option(
    "--on-bad-pair",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="Unreadable or mismatched pairs: stop, or leave them out (decodes every image first; recorded).",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score a split that has fewer pairs than its manifest declares (recorded as partial).",
)
@options.nproc
@options.experiment_file
def run(tracking: bool, tracking_uri, experiment, nproc, experiment_file, **given) -> None:
    """Evaluate one zoo model on one benchmark with PSNR/SSIM/LPIPS, per routing mode, logged to MLflow;
    with -e, every evaluation of a sweep file under one parent run."""
    if nproc and nproc > 1:
        raise SystemExit(launch_torchrun(nproc, "run", sys.argv[2:]))
    cfg = EvalConfig(
        model=given["model"] or DEFAULT_MODEL,
        bench=given["bench"],
        checkpoint=str(given["checkpoint"]) if given["checkpoint"] else None,
        k=given["k"],
        split=given["split"],
        routing=options.csv(given["routing"]),
        task=given["task"],
        metrics=None if given["metrics"] is None else options.csv(given["metrics"]) or [],
        device=given["device"],
        batch_size=given["batch_size"],
        workers=given["workers"],
        limit=given["limit"],
        seed=given["seed"],
        out=given["out"],
        save_images=given["save_images"],
        tile=given["tile"],
        tile_overlap=given["tile_overlap"],
        precision=given["precision"],
        compile=given["compile_mode"],
        data_root=given["data_root"],
        bench_dirs=list(given["bench_dirs"]),
        zoo_dirs=list(given["zoo_dirs"]),
        weights_dir=given["weights_dir"],
        allow_download=given["allow_download"],
        on_bad_pair=given["on_bad_pair"],
        allow_partial=given["allow_partial"],
        param_key=given["param_key"],
        cast_weights=given["cast_weights"],
    )
    if tracking and int(os.environ.get("RANK", "0")) == 0:
        mlflow_runs.check_server(tracking_uri)
    configs, parent = [cfg], None
    if experiment_file is not None:
        doc = load_config(experiment_file)
        configs = expand_sweep(doc, cfg, str(experiment_file))
        if tracking and int(os.environ.get("RANK", "0")) == 0:
            name = str(doc.get("name", Path(experiment_file).stem))
            parent = mlflow_runs.start_sweep(name, doc, tracking_uri, experiment)
    for one in configs:
        result = evaluate(one, progress=True)
        if result is None:
            continue
        print_result(result)
        click.echo(f"results: {one.out_dir}")
        if tracking:
            run_id = mlflow_runs.log_results(one.out_dir, tracking_uri, experiment, parent_run_id=parent)
            click.echo(f"mlflow run: {run_id}")


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval log results/DeMoE-tiny-synth@aio-synth",
        "demoe-eval log DIR --tracking-uri http://mlflow:5000",
    ),
)
@click.argument("results_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@options.mlflow_experiment
@options.tracking_uri
def log(results_dir: Path, experiment: str | None, tracking_uri: str | None) -> None:
    """Log a finished evaluation's results folder to MLflow (when the server was unreachable during the run)."""
    mlflow_runs.check_server(tracking_uri)
    run_id = mlflow_runs.log_results(results_dir, tracking_uri, experiment)
    click.echo(f"mlflow run: {run_id}")
