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


# ----------------------------------------------------------------------------- run


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _launch_torchrun(nproc: int, command: str) -> None:
    """Re-run this command line under torchrun with ``nproc`` processes (one torch thread each)."""
    import os
    import subprocess

    args, skip = [], False
    for arg in sys.argv[2:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "demoe.cli",
        command,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    raise SystemExit(subprocess.call(cmd, env=env))


def print_results(results: dict) -> None:
    """The summary table of one evaluation: one row per routing mode."""
    metric_names = sorted({m for r in results["results"].values() for m in r["metrics"]})
    rows = []
    for mode in results["routing_modes"]:
        summary = results["results"].get(mode)
        if summary is None:
            continue
        row = {"routing": mode, "images": summary["images"]}
        for name in metric_names:
            value = summary["metrics"].get(name)
            row[name] = (
                "n/a"
                if value is None
                else f"{value:.4f}"
                if name.startswith(("ssim", "lpips"))
                else f"{value:.2f}"
            )
        accuracy = summary.get("routing_accuracy")
        row["routing_acc"] = "-" if accuracy is None else f"{100 * accuracy:.1f}%"
        seconds = summary.get("seconds_per_image")
        row["s/img"] = "-" if seconds is None else f"{seconds:.4f}"
        rows.append(row)
    click.echo(
        f"{results['model']} on {results['bench']} ({results['split']}, {results['bench_info']['pairs']} pairs)"
    )
    _print_table(rows, ["routing", "images", *metric_names, "routing_acc", "s/img"])
    for name, reason in results.get("metrics_unavailable", {}).items():
        click.echo(f"{name}: not computed: {reason}", err=True)
    if results["bench_info"].get("protocol_note"):
        click.echo(f"note: {results['bench_info']['protocol_note']}", err=True)


@main.command()
@click.option("--model", default=None, help="Zoo model name (default: the embedded default model).")
@click.option(
    "--bench",
    default="aio-synth",
    show_default=True,
    help="Benchmark name, subset (aio-synth/defocus) or a folder with blur/ and sharp/.",
)
@click.option("--split", default=None, help="Benchmark split (default: its test split).")
@click.option(
    "--routing",
    default=None,
    help="Comma list of auto, oracle, all or task names (default: auto,oracle when the benchmark is labelled, else auto).",
)
@click.option(
    "--metrics", default="psnr,ssimc,lpips", show_default=True, help="Comma list of pyiqa metric names."
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file to load instead of the zoo's.",
)
@click.option(
    "--k", "k", type=int, default=None, help="Number of experts per MoE block (overrides the zoo entry)."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N pairs (smoke runs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tile", type=int, default=None, help="Restore in tiles of this size (large images).")
@click.option("--tile-overlap", type=int, default=32, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--experiment", default=None, help="MLflow experiment name.")
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
)
@click.option("--tracking/--no-tracking", default=True, show_default=True, help="Log to MLflow.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Results folder (default: results/MODEL@BENCH).",
)
@click.option(
    "--save-images",
    type=int,
    default=0,
    is_flag=False,
    flag_value=4,
    help="Save restored samples (default 4 when given).",
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Benchmark root (default: $DEMOE_DATA, else ./data).",
)
@click.option(
    "--bench-dir",
    "bench_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of benchmark YAML files.",
)
@click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files.",
)
@click.option(
    "--weights-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding metric weights (a TORCH_HOME).",
)
@click.option("--allow-download", is_flag=True, help="Let metrics download their weights.")
@click.option("--on-bad-pair", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--nproc", type=int, default=None, help="Launch this many processes with torchrun.")
@click.option(
    "-e",
    "--experiment-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Sweep file (models x benches x k x routing) run under one parent run.",
)
def run(
    model,
    bench,
    split,
    routing,
    metrics,
    checkpoint,
    k,
    device,
    batch_size,
    workers,
    limit,
    seed,
    tile,
    tile_overlap,
    precision,
    experiment,
    tracking_uri,
    tracking,
    out,
    save_images,
    data_root,
    bench_dirs,
    zoo_dirs,
    weights_dir,
    allow_download,
    on_bad_pair,
    nproc,
    experiment_file,
) -> None:
    """Evaluate one zoo model on one benchmark with PSNR/SSIM/LPIPS, per routing mode, logged to MLflow."""
    import os

    if nproc and nproc > 1:
        _launch_torchrun(nproc, "run")
    from demoe import evaluate
    from demoe import tracking as tracking_lib
    from demoe import zoo as zoo_lib

    cfg = evaluate.EvalConfig(
        model=model or zoo_lib.DEFAULT_MODEL,
        bench=bench,
        checkpoint=str(checkpoint) if checkpoint else None,
        k=k,
        split=split,
        routing=_csv(routing),
        metrics=_csv(metrics) or [],
        device=device,
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        seed=seed,
        out=out,
        save_images=save_images,
        tile=tile,
        tile_overlap=tile_overlap,
        precision=precision,
        data_root=data_root,
        bench_dirs=list(bench_dirs),
        zoo_dirs=list(zoo_dirs),
        weights_dir=weights_dir,
        allow_download=allow_download,
        on_bad_pair=on_bad_pair,
        progress=sys.stderr.isatty(),
    )
    if experiment_file is None:
        configs, parent = [cfg], None
    else:
        from demoe.config import load_config

        doc = load_config(experiment_file)
        configs = evaluate.expand_sweep(doc, cfg, str(experiment_file))
        is_main = int(os.environ.get("RANK", "0")) == 0
        parent = (
            tracking_lib.start_sweep(
                str(doc.get("name", experiment_file.stem)), doc, tracking_uri, experiment
            )
            if tracking and is_main
            else None
        )
    for one in configs:
        results = evaluate.evaluate(one)
        if not results:
            continue
        print_results(results)
        folder = Path(one.out or evaluate.default_out_dir(one.model, one.bench))
        click.echo(f"results: {folder}")
        if tracking:
            run_id = tracking_lib.log_results(folder, tracking_uri, experiment, parent_run_id=parent)
            click.echo(f"mlflow run: {run_id}")


@main.command("log")
@click.argument("results_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--experiment", default=None, help="MLflow experiment name.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI.")
def log_cmd(results_dir: Path, experiment: str | None, tracking_uri: str | None) -> None:
    """Log a finished evaluation's results folder to MLflow (when the server was unreachable during the run)."""
    from demoe import tracking as tracking_lib

    run_id = tracking_lib.log_results(results_dir, tracking_uri, experiment)
    click.echo(f"mlflow run: {run_id}")


@main.command()
@click.option("--port", type=int, default=5000, show_default=True)
@click.option(
    "--tracking-uri",
    default=None,
    help="Store to browse (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
)
def ui(port: int, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the store that run, finetune and report use (one worker, light on memory)."""
    import os
    import subprocess

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    click.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port}")
    raise SystemExit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
