"""The evaluator: one model x one benchmark x routing modes -> per-image records and their summary.

It knows nothing about the command line or MLflow: it takes an ``EvalConfig``, writes its results
folder (records appended batch by batch, so a killed run resumes where it stopped) and returns the
summary. Under torchrun every rank scores its own shard of the images and rank 0 gathers them.
"""

import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from demoe import net
from demoe.errors import DemoeError
from demoe.vocab import MODEL_MODES, TASK_INDEX, TASKS

RECORDS_PREFIX = "records"


class EvaluationError(DemoeError):
    pass


@dataclass
class EvalConfig:
    model: str
    bench: str
    checkpoint: str | None = None
    k: int | None = None
    split: str | None = None
    routing: list[str] | None = None  # None: auto (+ oracle when the benchmark is labelled)
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssimc", "lpips"])
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
    progress: bool = True

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()} | {
            "bench_dirs": [str(p) for p in self.bench_dirs],
            "zoo_dirs": [str(p) for p in self.zoo_dirs],
        }


def default_workers(device: torch.device) -> int:
    """DataLoader workers when ``--workers`` is not given: none on a CPU, where a decoding process
    takes a core from the forward's threads and every intra-op barrier waits for the preempted one
    (two workers made the forwards a third slower on 2 cores), two beside a GPU."""
    return 0 if device.type == "cpu" else 2


def default_out_dir(model: str, bench: str) -> Path:
    return Path("results") / f"{model}@{bench.replace('/', '-')}"


SWEEP_KEYS = {"name", "models", "benches", "routing", "k", "metrics", "options"}


def expand_sweep(doc: dict, base: EvalConfig, source: str = "experiment file") -> list[EvalConfig]:
    """The evaluations of a sweep file: every model x benchmark x k, each with the file's routing modes.

    ``models`` items are zoo names or ``{name, checkpoint}``; ``options`` holds any EvalConfig field
    (limit, batch_size, split, ...). Values given on the command line for ``base`` are kept unless the file sets them.
    """
    unknown = set(doc) - SWEEP_KEYS
    if unknown or not doc.get("models") or not doc.get("benches"):
        raise EvaluationError(
            f"{source}: a sweep needs models and benches and knows only {', '.join(sorted(SWEEP_KEYS))}"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
        )
    options = dict(doc.get("options") or {})
    bad = set(options) - set(EvalConfig.__dataclass_fields__)
    if bad:
        raise EvaluationError(f"{source}: unknown options {', '.join(sorted(bad))}")
    ks = doc.get("k") or [None]
    ks = ks if isinstance(ks, list) else [ks]
    sweep_name = str(doc.get("name", "sweep"))
    configs = []
    for item in doc["models"]:
        model = item if isinstance(item, dict) else {"name": item}
        for bench in doc["benches"]:
            for k in ks:
                tag = f"{model['name']}{f'-k{k}' if k else ''}@{bench.replace('/', '-')}"
                fields = {**asdict(base), **options}
                fields.update(
                    model=model["name"],
                    checkpoint=model.get("checkpoint", base.checkpoint),
                    bench=bench,
                    k=k if k is not None else base.k,
                    out=Path(base.out or Path("results") / sweep_name) / tag,
                )
                if doc.get("routing"):
                    fields["routing"] = list(doc["routing"])
                if doc.get("metrics"):
                    fields["metrics"] = list(doc["metrics"])
                configs.append(EvalConfig(**fields))
    return configs


def parse_routing(value: str | None, bench_label_available: bool, has_router: bool) -> list[str]:
    """The model routing modes to run, from ``--routing`` (``None`` means the default)."""
    if not has_router:
        if value not in (None, "auto"):
            raise EvaluationError("--routing: this model has no router or experts; only 'auto' applies")
        return ["auto"]
    if value is None:
        return ["auto", "oracle"] if bench_label_available else ["auto"]
    modes = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        expanded = list(MODEL_MODES) if item == "all" else [item]
        for mode in expanded:
            if mode not in MODEL_MODES:
                raise EvaluationError(
                    f"--routing: unknown mode {mode!r}; use auto, oracle, all or a task: {', '.join(TASKS)}"
                )
            if mode == "oracle" and not bench_label_available:
                if item == "all":
                    continue
                raise EvaluationError(
                    "--routing oracle: this benchmark has no task labels to force; use auto or a task name"
                )
            if mode not in modes:
                modes.append(mode)
    return modes


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a single process needs none."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(device: str, dist_info: Dist) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dist_info.world > 1:
        device = f"cuda:{dist_info.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------- records on disk


def read_records(out: Path) -> list[dict]:
    """Every complete record of every rank's file (a torn last line from a kill is ignored)."""
    records = []
    for path in sorted(out.glob(f"{RECORDS_PREFIX}*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def open_records(out: Path, rank: int):
    """Open this rank's records file for appending, first cutting off a line torn by a kill."""
    path = out / f"{RECORDS_PREFIX}.rank{rank}.jsonl"
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
    return open(path, "a", encoding="utf-8")


def append_records(f, records: list[dict]) -> None:
    f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def unique_records(records: list[dict]) -> list[dict]:
    """One record per (mode, image), in a deterministic order."""
    seen = {}
    for r in records:
        seen.setdefault((r["mode"], r["name"]), r)
    return [seen[k] for k in sorted(seen)]


# ----------------------------------------------------------------------------- the summary


def summarize(records: list[dict], metric_names: list[str], num_blocks: int | None) -> dict:
    """Per routing mode: mean of per-image metrics, seconds per image, routing accuracy and
    confusion (auto), expert usage per MoE block per label."""
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mode[r["mode"]].append(r)
    summary = {}
    for mode, rows in sorted(by_mode.items()):
        entry: dict = {"images": len(rows), "metrics": {}}
        for name in metric_names:
            values = [r[name] for r in rows if r.get(name) is not None]
            if values:
                entry["metrics"][name] = sum(values) / len(values)
        if mode != "identity":
            entry["seconds_per_image"] = sum(r["seconds"] for r in rows) / len(rows)
        routed = [r for r in rows if r.get("pred_task") is not None]
        labelled = [r for r in routed if r.get("label") is not None]
        if mode == "auto" and labelled:
            entry["routing_accuracy"] = sum(r["pred_task"] == r["label"] for r in labelled) / len(labelled)
            confusion = [[0] * len(TASKS) for _ in TASKS]
            for r in labelled:
                confusion[TASK_INDEX[r["label"]]][TASK_INDEX[r["pred_task"]]] += 1
            entry["confusion"] = {"labels": list(TASKS), "rows_true_cols_predicted": confusion}
        if num_blocks and mode != "identity":
            usage: dict[str, list[list[int]]] = {}
            for r in rows:
                key = r.get("label") or "unlabelled"
                counts = usage.setdefault(key, [[0] * len(TASKS) for _ in range(num_blocks)])
                for block, experts in enumerate(r.get("experts") or []):
                    for e in experts:
                        counts[block][e] += 1
            if usage:
                entry["expert_usage"] = dict(sorted(usage.items()))
        summary[mode] = entry
    return summary


# ----------------------------------------------------------------------------- the run


def _size_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of images of equal size (order within a size kept)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[size].append(i)
    batches = []
    for size in sorted(groups):
        idx = groups[size]
        batches += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return sorted(batches, key=lambda b: b[0])


def collate_pairs(items):
    blurred, sharp, names, labels = zip(*items, strict=True)
    return torch.stack(blurred), torch.stack(sharp), list(names), torch.tensor(labels)


def _restore(model, blurred: torch.Tensor, mode: str, labels: torch.Tensor, cfg: "EvalConfig | None") -> dict:
    """The model's forward in ``mode``: through ``inference.restore`` (tiles, precision, the prepared
    fast path) for ``run``, plainly for finetuning's validation (``cfg`` None), whose model trains on."""
    from demoe import inference

    task = labels if mode == "oracle" else mode
    if cfg is None:
        return model(blurred, task=task)
    return inference.restore(
        model, blurred, task, tile=cfg.tile, overlap=cfg.tile_overlap, precision=cfg.precision
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_batch(
    model,
    blurred: torch.Tensor,
    sharp: torch.Tensor,
    names: list[str],
    labels: torch.Tensor,
    modes: list[str],
    metrics,
    cfg: "EvalConfig | None" = None,
    skip: set | frozenset = frozenset(),
    restore_anyway: set | frozenset = frozenset(),
) -> tuple[list[dict], dict]:
    """Restore one batch in every routing mode and score it: the per-image records of ``run`` and of
    finetuning's validation. Returns the records and the restored batch of each model mode. Records
    in ``skip`` (mode, name) are not made again; a batch holding a name of ``restore_anyway`` is
    restored in every mode all the same (its samples are to be saved)."""
    records, restored_by_mode = [], {}
    device = blurred.device
    for mode in modes:
        pending = [i for i, n in enumerate(names) if (mode, n) not in skip]
        if not pending and not restore_anyway.intersection(names):
            continue
        if mode == "identity":
            restored, routed, seconds = blurred, None, 0.0
        else:
            _sync(device)
            t0 = time.perf_counter()
            routed = _restore(model, blurred, mode, labels, cfg)
            _sync(device)
            seconds = (time.perf_counter() - t0) / len(names)
            restored = routed["output"]
            restored_by_mode[mode] = restored
        scores = metrics(restored.float().clamp(0, 1), sharp)
        for i in pending:
            label_idx = int(labels[i])
            record = {
                "mode": mode,
                "name": names[i],
                "label": TASKS[label_idx] if label_idx >= 0 else None,
                "seconds": seconds,
                **{m: float(v[i]) for m, v in scores.items()},
            }
            if routed is not None and "router_logits" in routed:
                probs = torch.softmax(routed["router_logits"][i].float(), dim=0)
                record["router_probs"] = [round(float(p), 6) for p in probs]
                record["pred_task"] = TASKS[int(probs.argmax())]
                gate = routed["pred_labels"][i]
                chosen = [int(e) for e in gate.topk(model.k_used).indices if gate[e] > 0]
                record["experts"] = [sorted(chosen)] * len(model.experts)
            records.append(record)
    return records, restored_by_mode


def samples_to_save(pairs: list, modes: list[str], per_label: int, folder: Path) -> set[str]:
    """Names of the first ``per_label`` pairs of each blur label (of all pairs where there are no labels)
    whose samples are not all in ``folder`` yet: these are restored even where their scores exist."""
    from demoe.tracking import sample_path

    first: dict = {}
    for pair in pairs:
        if len(first.setdefault(pair.label, [])) < per_label:
            first[pair.label].append(pair.name)
    tags = ["blurred", *(m for m in modes if m != "identity")]
    return {
        name
        for names in first.values()
        for name in names
        if not all(sample_path(folder, name, tag).is_file() for tag in tags)
    }


def save_wild_sample(model, path: Path, modes: list[str], cfg: "EvalConfig", device, folder: Path) -> None:
    """Restore a benchmark's unpaired in-the-wild photo in every model mode that needs no label, and
    save it beside the samples as ``wild/NAME`` (no sharp image), for the report to show."""
    from demoe.data.images import read_image
    from demoe.tracking import save_sample

    image = torch.from_numpy(read_image(path).transpose(2, 0, 1).copy())[None].to(device)
    with torch.inference_mode():
        for mode in modes:
            if mode not in ("identity", "oracle"):
                restored = _restore(model, image, mode, torch.tensor([-1]), cfg)["output"][0]
                save_sample(folder, f"wild/{path.stem}", mode, image[0], restored)


def validate(model, loader, metrics, modes: list[str], device: torch.device) -> dict:
    """Score ``model`` on every batch of ``loader`` (blurred, sharp, names, labels) in ``modes``;
    returns ``summarize``'s per-mode results. Used by finetuning, so its figures match ``run``'s."""
    was_training = model.training
    model.eval()
    records = []
    with torch.inference_mode():
        for blurred, sharp, names, labels in loader:
            batch, _ = score_batch(model, blurred.to(device), sharp.to(device), names, labels, modes, metrics)
            records += batch
    model.train(was_training)
    num_blocks = len(model.experts) if hasattr(model, "experts") else None
    return summarize(unique_records(records), metrics.available, num_blocks)


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation of ``cfg`` and write its results folder; returns the results dict (rank 0)."""
    from tqdm import tqdm

    from demoe.data.dataset import PairedImageDataset
    from demoe.data.images import image_size
    from demoe.data.pairs import check, good_pairs, resolve
    from demoe.fileio import sha256_file
    from demoe.metrics import MetricSet, Protocol
    from demoe.registry import build, zoo
    from demoe.tracking import write_results

    called = time.perf_counter()
    dist_info = init_distributed(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = resolve_device(cfg.device, dist_info)
    torch.manual_seed(cfg.seed)

    bench = resolve(cfg.bench, split=cfg.split, data_root=cfg.data_root, bench_dirs=cfg.bench_dirs)
    report = check(bench)
    pairs = good_pairs(bench, report, cfg.on_bad_pair)
    bad = {p.name for p in report.problems}
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    if not pairs:
        raise EvaluationError(f"{bench.spec.name}: no image pairs to evaluate under {bench.root}")
    labelled = any(p.label is not None for p in pairs)

    model, entry, ckpt_path = build.create_model(
        cfg.model, checkpoint=cfg.checkpoint, k=cfg.k, zoo=zoo.load_zoo(zoo.zoo_dirs(cfg.zoo_dirs))
    )
    from demoe import inference

    inference.check_precision(cfg.precision, device)
    model = inference.prepare(model, device, cfg.compile)
    has_router = net.has_router(model)
    modes = ["identity", *parse_routing(",".join(cfg.routing) if cfg.routing else None, labelled, has_router)]
    num_blocks = len(model.experts) if has_router else None

    protocol = Protocol(
        **{k: v for k, v in bench.spec.protocol.items() if k in ("color", "crop_border", "quantize_8bit")}
    )
    metrics = MetricSet(
        cfg.metrics,
        device=device,
        protocol=protocol,
        weights_dir=cfg.weights_dir,
        allow_download=cfg.allow_download,
    )
    checkpoint_sha = sha256_file(ckpt_path) if ckpt_path else None
    run_key = {
        "model": cfg.model,
        "checkpoint_sha256": checkpoint_sha,
        "k": cfg.k,
        "bench": bench.spec.name,
        "split": bench.split,
        "bench_fingerprint": report.fingerprint,
        "metrics": metrics.available,
        "protocol": protocol.to_dict(),
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap,
        "precision": cfg.precision,
    }
    out = Path(cfg.out or default_out_dir(cfg.model, cfg.bench))
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / "run_key.json"
    if dist_info.is_main:
        if key_file.exists() and json.loads(key_file.read_text()) != run_key:
            old = json.loads(key_file.read_text())
            changed = sorted(k for k in run_key if old.get(k) != run_key[k])
            raise EvaluationError(
                f"--out {out}: holds results made with other settings ({', '.join(changed)}); "
                "use another --out or delete that folder"
            )
        from demoe.fileio import atomic_write_text

        atomic_write_text(key_file, json.dumps(run_key, indent=1, sort_keys=True))

    done = {(r["mode"], r["name"]) for r in read_records(out)}
    shard = pairs[dist_info.rank :: dist_info.world]
    sample_dir = out / "samples"
    to_save = samples_to_save(shard, modes, cfg.save_images, sample_dir) if dist_info.is_main else set()
    todo = [p for p in shard if p.name in to_save or any((m, p.name) not in done for m in modes)]

    dataset = PairedImageDataset(todo)
    sizes = [image_size(p.blurred) for p in todo]
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_size_batches(sizes, cfg.batch_size),
        num_workers=workers if todo else 0,
        collate_fn=collate_pairs,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    started = time.perf_counter()
    setup_seconds = started - called
    forward_seconds = 0.0
    with (
        open_records(out, dist_info.rank) as records_file,
        torch.inference_mode(),
        tqdm(
            total=len(todo),
            unit="img",
            desc=f"{cfg.model}@{bench.spec.name}",
            disable=not (cfg.progress and dist_info.is_main),
            dynamic_ncols=True,
        ) as bar,
    ):
        psnr_sum, psnr_n = 0.0, 0
        for blurred, sharp, names, labels in loader:
            batch_records, restored_by_mode = score_batch(
                model,
                blurred.to(device, non_blocking=True),
                sharp.to(device, non_blocking=True),
                names,
                labels,
                modes,
                metrics,
                cfg,
                skip=done,
                restore_anyway=to_save,
            )
            forward_seconds += sum(r["seconds"] for r in batch_records)
            if to_save:
                from demoe.tracking import save_sample

                for i, name in enumerate(names):
                    if name in to_save:
                        for mode, restored in restored_by_mode.items():
                            save_sample(sample_dir, name, mode, blurred[i], restored[i], sharp[i])
            psnr = [r["psnr"] for r in batch_records if r["mode"] == modes[-1] and "psnr" in r]
            psnr_sum, psnr_n = psnr_sum + sum(psnr), psnr_n + len(psnr)
            append_records(records_file, batch_records)
            done.update((r["mode"], r["name"]) for r in batch_records)
            bar.update(len(names))
            if psnr_n:
                bar.set_postfix(psnr=f"{psnr_sum / psnr_n:.2f}")
    wall = time.perf_counter() - started
    wild = bench.root / bench.spec.extras["wild"] if "wild" in bench.spec.extras else None
    if cfg.save_images and dist_info.is_main and wild is not None and wild.is_file():
        save_wild_sample(model, wild, modes, cfg, device, sample_dir)

    local = [r for r in read_records(out)]
    if dist_info.world > 1:
        import torch.distributed as dist

        gathered: list = [None] * dist_info.world
        dist.all_gather_object(gathered, local)
        local = [r for part in gathered for r in part]
    if not dist_info.is_main:
        return {}

    records = [
        r for r in unique_records(local) if r["mode"] in modes and r["name"] in {p.name for p in pairs}
    ]
    results = {
        "run_name": f"{cfg.model}{f'-k{cfg.k}' if cfg.k else ''}@{bench.spec.name}",
        "model": cfg.model,
        "bench": bench.spec.name,
        "split": bench.split,
        "routing_modes": modes,
        "model_info": {
            "arch": entry.arch,
            "kwargs": {**entry.kwargs, **({"k_used": cfg.k} if cfg.k else {})},
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "checkpoint_sha256": checkpoint_sha,
            "params": sum(p.numel() for p in model.parameters()),
        },
        "bench_info": {
            "root": str(bench.root),
            "pairs": len(pairs),
            "fingerprint": report.fingerprint,
            "task": bench.spec.task,
            "protocol_note": getattr(bench.spec, "protocol_note", None) or None,
            "skipped_bad_pairs": sorted(bad),
        },
        "protocol": protocol.to_dict(),
        "metrics_unavailable": dict(metrics.unavailable),
        "results": summarize(records, metrics.available, num_blocks),
        "timing": {
            "setup_seconds": setup_seconds,
            "wall_seconds": wall,
            "forward_seconds": forward_seconds,
            "world_size": dist_info.world,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "workers": workers,
        },
        "config": cfg.to_dict(),
    }
    write_results(out, results, records)
    return results
