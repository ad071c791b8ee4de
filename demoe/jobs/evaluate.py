"""``demoe-eval run``'s walk through the pipeline: one model x one benchmark x routing modes -> a
results folder and its ``EvalResult``.

zoo entry -> model (registry) -> pairs on disk (data) -> metric set (metrics) -> records (runner),
appended to the results folder batch by batch (tracking), so a killed run started again with the same
settings skips the images already scored. Under torchrun every rank scores its own shard of the
images and rank 0 gathers them, summarises and writes the folder. MLflow logging is the caller's.
"""

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from demoe.data import samples
from demoe.data.dataset import PairedImageDataset
from demoe.data.images import image_size, read_image
from demoe.data.pairs import Benchmark, CheckReport, check, good_pairs, resolve
from demoe.fileio import sha256_file
from demoe.jobs.restore import panel_label
from demoe.metrics.scorers import NO_REFERENCE_DEFAULTS, MetricSet, Protocol
from demoe.metrics.summary import compare_modes, decisions, summarize
from demoe.net import has_router
from demoe.progress import bar as progress_bar
from demoe.records import BenchInfo, EvalResult, ModelInfo, Statistics, Timing
from demoe.registry import build, zoo
from demoe.registry.checkpoints import LoadedWeights
from demoe.runner import inference
from demoe.runner.scoring import (
    EvaluationError,
    RestoreOptions,
    ScoredBatch,
    collate_pairs,
    num_moe_blocks,
    parse_routing,
    score_loader,
    size_batches,
)
from demoe.runtime import Dist, gather, init_distributed, resolve_device
from demoe.tracking.results import (
    STRIPS,
    RecordsFile,
    claim,
    read_records,
    sample_path,
    save_sample,
    save_strip,
    strip_path,
    unique_records,
    write_results,
)
from demoe.vocab import AUTO, IDENTITY, ORACLE, TASKS


@dataclass(frozen=True)
class EvalConfig:
    model: str
    bench: str
    checkpoint: str | None = None
    k: int | None = None
    split: str | None = None
    routing: list[str] | None = None  # None: auto (+ oracle when the benchmark is labelled)
    task: str | None = None  # label every pair of an unlabelled benchmark with this task for this run
    metrics: list[str] | None = None  # None: DEFAULT_METRICS, or NO_REFERENCE_DEFAULTS without sharp images
    device: str = "auto"
    batch_size: int = 1
    workers: int | None = None  # None: default_workers(device)
    limit: int | None = None
    seed: int = 0
    out: Path | None = None
    save_images: int = 0
    tile: int | None = None
    tile_overlap: int = 32
    precision: str = "fp32"
    compile: str = "auto"  # torch.compile the whole-image forwards: auto (on CUDA only), on, off
    data_root: Path | None = None
    bench_dirs: list[Path] = field(default_factory=list)
    zoo_dirs: list[Path] = field(default_factory=list)
    weights_dir: Path | None = None
    allow_download: bool = False
    on_bad_pair: str = "fail"
    allow_partial: bool = False  # score a split that has fewer pairs than its manifest declares
    param_key: str | None = None  # the checkpoint's entry holding the weights (None: the zoo entry's)
    cast_weights: bool = False  # convert checkpoint tensors of another dtype than the model's

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()} | {
            "bench_dirs": [str(p) for p in self.bench_dirs],
            "zoo_dirs": [str(p) for p in self.zoo_dirs],
        }

    @property
    def restore_options(self) -> RestoreOptions:
        return RestoreOptions(tile=self.tile, tile_overlap=self.tile_overlap, precision=self.precision)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or default_out_dir(self.model, self.bench))


DEFAULT_METRICS = ("psnr", "ssimc", "lpips")


def default_workers(device: torch.device) -> int:
    """DataLoader workers when ``--workers`` is not given: none on a CPU, where a decoding process
    takes a core from the forward's threads and every intra-op barrier waits for the preempted one
    (two workers made the forwards a third slower on 2 cores), two beside a GPU."""
    return 0 if device.type == "cpu" else 2


def default_out_dir(model: str, bench: str) -> Path:
    return Path("results") / f"{model}@{bench.replace('/', '-')}"


@dataclass
class Setup:
    """What an evaluation runs with, resolved from its config before any image is restored."""

    dist_info: Dist
    device: torch.device
    bench: Benchmark
    report: CheckReport
    pairs: list
    model: torch.nn.Module
    entry: zoo.ZooEntry
    checkpoint: Path | None
    checkpoint_sha256: str | None
    modes: list[str]
    protocol: Protocol
    metrics: MetricSet
    weights: LoadedWeights | None = None  # which entry of the checkpoint was loaded, what was cast
    param_key_requested: str | None = None  # --param-key, else the zoo entry's checkpoint.param_key
    metric_names: list[str] = field(default_factory=list)  # the metrics asked for, defaults resolved


def label_pairs(pairs: list, task: str | None, bench: Benchmark) -> list:
    """``pairs`` labelled ``task`` for this run (``--task``), which only an unlabelled benchmark takes."""
    if task is None:
        return pairs
    if task not in TASKS:
        raise EvaluationError(f"--task {task!r}: not a task; use one of {', '.join(TASKS)}")
    if any(p.label is not None for p in pairs):
        raise EvaluationError(
            f"--task {task}: {bench.spec.name} carries its own task labels and --task labels an unlabelled "
            f"benchmark; drop --task (--routing {task} forces that expert on every image)"
        )
    return [dataclasses.replace(p, label=task) for p in pairs]


def prepare(cfg: EvalConfig) -> Setup:
    dist_info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, dist_info)
    torch.manual_seed(cfg.seed)
    bench = resolve(cfg.bench, split=cfg.split, data_root=cfg.data_root, bench_dirs=cfg.bench_dirs)
    # skipping bad pairs decodes every image first, so that corrupt pixels are skipped, not fatal
    report = check(bench, read_pixels=cfg.on_bad_pair == "skip")
    pairs = label_pairs(good_pairs(bench, report, cfg.on_bad_pair, cfg.allow_partial), cfg.task, bench)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    if not pairs:
        raise EvaluationError(f"{bench.spec.name}: no image pairs to evaluate under {bench.root}")
    loaded = build.load_model(
        cfg.model,
        checkpoint=cfg.checkpoint,
        k=cfg.k,
        zoo=zoo.load_zoo(zoo.zoo_dirs(cfg.zoo_dirs)),
        param_key=cfg.param_key,
        cast_weights=cfg.cast_weights,
    )
    model, entry, checkpoint = loaded.model, loaded.entry, loaded.checkpoint
    requested_key = zoo.weights_options(entry, cfg.checkpoint is None, cfg.param_key)[0]
    inference.check_precision(cfg.precision, device)
    model = inference.prepare(model, device, cfg.compile)
    labelled = any(p.label is not None for p in pairs)
    routing = ",".join(cfg.routing) if cfg.routing else None
    modes = [IDENTITY, *parse_routing(routing, labelled, has_router(model))]
    protocol = Protocol(
        **{k: v for k, v in bench.spec.protocol.items() if k in ("color", "crop_border", "quantize_8bit")}
    )
    unpaired = bench.spec.unpaired  # no sharp images: no-reference metrics score each image alone
    defaults = NO_REFERENCE_DEFAULTS if unpaired else DEFAULT_METRICS
    names = list(cfg.metrics if cfg.metrics is not None else defaults)
    metrics = MetricSet(
        names,
        device=device,
        protocol=protocol,
        weights_dir=cfg.weights_dir,
        allow_download=cfg.allow_download,
        reference=not unpaired,
    )
    checkpoint_sha = sha256_file(checkpoint) if checkpoint else None
    return Setup(
        dist_info,
        device,
        bench,
        report,
        pairs,
        model,
        entry,
        checkpoint,
        checkpoint_sha,
        modes,
        protocol,
        metrics,
        loaded.weights,
        requested_key,
        metric_names=names,
    )


def run_key(cfg: EvalConfig, setup: Setup) -> dict:
    """The settings a results folder's records were made with: a rerun with others may not append."""
    return {
        "model": cfg.model,
        "checkpoint_sha256": setup.checkpoint_sha256,
        "k": cfg.k,
        "bench": setup.bench.spec.name,
        "split": setup.bench.split,
        "bench_fingerprint": setup.report.fingerprint,
        "metrics": setup.metrics.available,
        "protocol": setup.protocol.to_dict(),
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap,
        "precision": cfg.precision,
    } | (
        ({"checkpoint_param_key": setup.param_key_requested} if setup.param_key_requested else {})
        | ({"task": cfg.task} if cfg.task else {})
    )


def samples_to_save(pairs: list, modes: list[str], per_label: int, folder: Path) -> set[str]:
    """Names of ``per_label`` varied pairs of each blur label (``samples.varied_pairs``) whose samples
    are not all in ``folder`` yet: these are restored even where their scores exist."""
    tags = ["blurred", *(m for m in modes if m != IDENTITY)]
    return {
        pair.name
        for pair in (samples.varied_pairs(pairs, per_label) if per_label else [])
        if not all(sample_path(folder, pair.name, tag).is_file() for tag in tags)
    }


def save_wild_sample(setup: Setup, path: Path, restore: RestoreOptions, folder: Path) -> None:
    """Restore a benchmark's unpaired in-the-wild photo in every model mode that needs no label, and
    save it beside the samples as ``wild/NAME`` (no sharp image), for the report to show."""
    image = torch.from_numpy(read_image(path).transpose(2, 0, 1).copy())[None].to(setup.device)
    with torch.inference_mode():
        for mode in setup.modes:
            if mode not in (IDENTITY, ORACLE):
                out = inference.restore(
                    setup.model,
                    image,
                    mode,
                    tile=restore.tile,
                    overlap=restore.tile_overlap,
                    precision=restore.precision,
                )
                save_sample(folder, f"wild/{path.stem}", mode, image[0], out["output"][0])


def strip_panels(scored: ScoredBatch, i: int) -> list:
    """Image ``i`` of a scored batch beside its restoration in every model mode, labelled as
    ``restore --compare`` labels them (auto: the task the router chose)."""
    views = {
        r.mode: {"pred_task": r.pred_task, "router_probs": r.router_probs}
        for r in scored.records
        if r.name == scored.batch.names[i] and r.pred_task
    }
    panels = [("input", scored.batch.blurred[i])]
    for mode, restored in scored.restored.items():
        panels.append((panel_label(mode, views.get(mode, {}), len(scored.restored)), restored[i]))
    return panels


def strips_to_save(setup: Setup, pairs: list, folder: Path) -> set[str]:
    """Without sharp images every image gets a strip, how a reader judges such results: the names of
    ``pairs`` whose strip is not in ``folder`` yet (none on a benchmark with sharp images)."""
    if not setup.bench.spec.unpaired:
        return set()
    return {p.name for p in pairs if not strip_path(folder, p.name).is_file()}


def loader_of(pairs: list, cfg: EvalConfig, device: torch.device):
    sizes = [image_size(p.blurred) for p in pairs]
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    loader = torch.utils.data.DataLoader(
        PairedImageDataset(pairs),
        batch_sampler=size_batches(sizes, cfg.batch_size),
        num_workers=workers if pairs else 0,
        collate_fn=collate_pairs,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    return loader, workers


def evaluate(cfg: EvalConfig, progress: bool = False) -> EvalResult | None:
    """Run the evaluation of ``cfg`` and write its results folder; returns its result (rank 0; None on
    the other ranks)."""
    called = time.perf_counter()
    setup = prepare(cfg)
    dist_info, modes, out = setup.dist_info, setup.modes, cfg.out_dir
    if dist_info.is_main:
        claim(out, run_key(cfg, setup))
    else:
        out.mkdir(parents=True, exist_ok=True)
    done = {r.key for r in read_records(out)}
    shard = setup.pairs[dist_info.rank :: dist_info.world]
    sample_dir = out / "samples"
    to_save = samples_to_save(shard, modes, cfg.save_images, sample_dir) if dist_info.is_main else set()
    strip_dir = out / STRIPS
    strips = strips_to_save(setup, shard, strip_dir)
    restore_anyway = to_save | strips
    todo = [p for p in shard if p.name in restore_anyway or any((m, p.name) not in done for m in modes)]
    loader, workers = loader_of(todo, cfg, setup.device)

    started = time.perf_counter()
    forward_seconds, psnr = 0.0, []
    records_file = RecordsFile(out, dist_info.rank)
    bar = progress_bar(
        len(todo), f"{cfg.model}@{setup.bench.spec.name}", "img", progress and dist_info.is_main
    )
    with bar:
        for scored in score_loader(
            setup.model, loader, modes, setup.metrics, setup.device, cfg.restore_options, done, restore_anyway
        ):
            forward_seconds += sum(r.seconds for r in scored.records)
            for i, name in enumerate(scored.batch.names):
                if name in strips:
                    save_strip(strip_dir, name, strip_panels(scored, i))
                if name in to_save:
                    for mode, restored in scored.restored.items():
                        save_sample(
                            sample_dir,
                            name,
                            mode,
                            scored.batch.blurred[i],
                            restored[i],
                            None if scored.batch.sharp is None else scored.batch.sharp[i],
                        )
            psnr += [r.scores["psnr"] for r in scored.records if r.mode == modes[-1] and "psnr" in r.scores]
            records_file.append(scored.records)
            done.update(r.key for r in scored.records)
            bar.update(len(scored.batch.names))
            if psnr:
                bar.set_postfix(psnr=f"{sum(psnr) / len(psnr):.2f}")
    wall = time.perf_counter() - started
    extras = setup.bench.spec.extras
    wild = setup.bench.root / extras["wild"] if "wild" in extras else None
    if cfg.save_images and dist_info.is_main and wild is not None and wild.is_file():
        save_wild_sample(setup, wild, cfg.restore_options, sample_dir)

    gathered = [r for part in gather(read_records(out), dist_info) for r in part]
    if not dist_info.is_main:
        return None
    names = {p.name for p in setup.pairs}
    records = [r for r in unique_records(gathered) if r.mode in modes and r.name in names]
    timing = Timing(
        setup_seconds=started - called,
        wall_seconds=wall,
        forward_seconds=forward_seconds,
        world_size=dist_info.world,
        device=str(setup.device),
        threads=torch.get_num_threads(),
        workers=workers,
    )
    result = make_result(cfg, setup, records, timing)
    write_results(out, result, records)
    return result


def make_result(cfg: EvalConfig, setup: Setup, records: list, timing: Timing) -> EvalResult:
    bench, entry, statistics = setup.bench, setup.entry, Statistics()
    results = summarize(records, setup.metrics.available, num_moe_blocks(setup.model), statistics)
    if bench.spec.unpaired and AUTO in results:  # what the router chose, where nothing can check it
        results[AUTO].decisions = decisions([r for r in records if r.mode == AUTO])
    return EvalResult(
        run_name=f"{cfg.model}{f'-k{cfg.k}' if cfg.k else ''}@{bench.spec.name}",
        model=cfg.model,
        bench=bench.spec.name,
        split=bench.split,
        routing_modes=setup.modes,
        model_info=ModelInfo(
            arch=entry.arch,
            kwargs={**entry.kwargs, **({"k_used": cfg.k} if cfg.k else {})},
            checkpoint=str(setup.checkpoint) if setup.checkpoint else None,
            checkpoint_sha256=setup.checkpoint_sha256,
            params=sum(p.numel() for p in setup.model.parameters()),
            checkpoint_param_key=setup.weights.param_key if setup.weights else None,
            weights_cast=dict(setup.weights.cast) if setup.weights else {},
        ),
        bench_info=BenchInfo(
            root=str(bench.root),
            pairs=len(setup.pairs),
            fingerprint=setup.report.fingerprint,
            task=bench.spec.task,
            protocol_note=getattr(bench.spec, "protocol_note", None) or None,
            skipped_bad_pairs=sorted({p.name for p in setup.report.problems}),
            expected_pairs=setup.report.expected,
            partial=setup.report.expected is not None and setup.report.pairs < setup.report.expected,
            unpaired=bench.spec.unpaired,
        ),
        protocol=setup.protocol.to_dict()
        | {"metric_color": setup.metrics.colors(), "paper_protocol": bench.spec.paper_protocol},
        metrics_unavailable=dict(setup.metrics.unavailable),
        results=results,
        timing=timing,
        config=cfg.to_dict() | {"metrics": list(setup.metric_names)},
        statistics=statistics,
        comparisons=compare_modes(records, setup.metrics.available, statistics),
    )
