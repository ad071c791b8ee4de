"""``demoe-eval restore``: a model x the user's own captures (no sharp reference) -> restored PNGs at full
resolution, what the router decided per image, and optional side-by-side strips.

inputs (data.captures) -> model (registry) -> ``inference.restore`` per image and routing mode, whole or
in tiles with one routing decision per image, as ``run`` restores (runner) -> a PNG of the input's bit
depth and a manifest line per image, so that a rerun with the same model, checkpoint and options skips
what is done -> ``restore.csv``, ``restore.parquet`` and ``restore.json``. Under torchrun every rank
restores its own share of the images and rank 0 writes the table. MLflow logging is the caller's.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from demoe.data.captures import (
    Capture,
    compare_strip,
    conversion_note,
    find_captures,
    read_capture,
    write_png,
)
from demoe.data.images import ImageReadError, probe_image
from demoe.errors import DemoeError
from demoe.fileio import append_jsonl, atomic_write, atomic_write_text, cut_torn_tail, read_jsonl, sha256_file
from demoe.net import has_router
from demoe.progress import bar as progress_bar
from demoe.registry import build, zoo
from demoe.runner import inference
from demoe.runner.scoring import router_view
from demoe.runtime import Dist, gather, init_distributed, resolve_device
from demoe.tracking.results import versions
from demoe.vocab import AUTO, TASK_SHORT, TASKS

ROUTINGS: tuple[str, ...] = (AUTO, "all", *TASKS)
TABLE_STEM = "restore"
SUMMARY_FILE = "restore.json"
MANIFEST_PREFIX = "manifest"
COMPARE_DIR = "compare"


class RestoreError(DemoeError):
    pass


@dataclass(frozen=True)
class RestoreConfig:
    inputs: tuple[str, ...]
    model: str = zoo.DEFAULT_MODEL
    checkpoint: str | None = None
    param_key: str | None = None  # the checkpoint's entry holding the weights (None: the usual order)
    cast_weights: bool = False
    routing: str = AUTO  # auto, a task (forced), or all: auto and every task
    out: Path = Path("restored")
    tile: int | None = None
    tile_overlap: int = 32
    precision: str = "fp32"
    compile: str = "auto"
    device: str = "auto"
    compare: bool = False
    zoo_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return asdict(self) | {"out": str(self.out), "zoo_dirs": [str(p) for p in self.zoo_dirs]}

    @property
    def modes(self) -> list[str]:
        if self.routing not in ROUTINGS:
            raise RestoreError(f"--routing {self.routing}: expected auto, all or a task: {', '.join(TASKS)}")
        return [AUTO, *TASKS] if self.routing == "all" else [self.routing]


@dataclass(frozen=True)
class Restored:
    """One image restored in one routing mode: from where, to where, and what the router made of it."""

    file: str
    mode: str
    output: str  # relative to the out folder
    width: int
    height: int
    bits: int
    seconds: float
    pred_task: str | None = None
    router_probs: tuple[float, ...] | None = None
    experts: tuple[tuple[int, ...], ...] | None = None  # per MoE block, the experts that ran
    compare: str | None = None  # the strip, relative to the out folder

    @property
    def confidence(self) -> float | None:
        return max(self.router_probs) if self.router_probs else None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "Restored":
        names = {f for f in cls.__dataclass_fields__}
        row = {k: v for k, v in row.items() if k in names}
        if row.get("router_probs") is not None:
            row["router_probs"] = tuple(row["router_probs"])
        if row.get("experts") is not None:
            row["experts"] = tuple(tuple(e) for e in row["experts"])
        return cls(**row)


@dataclass
class RestoreResult:
    out: Path
    modes: list[str]
    rows: list[Restored]  # every image of the inputs in every mode, restored now or by an earlier run
    restored: int  # images restored now
    skipped: int  # images an earlier run with the same settings had restored
    failed: list[tuple[str, str]]  # (file, reason) of the images that could not be read
    key: dict
    seconds: float

    @property
    def images(self) -> int:
        return len(self.rows) // len(self.modes)

    @property
    def seconds_per_image(self) -> float | None:
        """Restoring seconds per image, all its routing modes together."""
        return sum(r.seconds for r in self.rows) / self.images if self.rows else None

    @property
    def table_files(self) -> list[Path]:
        return [self.out / f"{TABLE_STEM}.csv", self.out / f"{TABLE_STEM}.parquet", self.out / SUMMARY_FILE]

    @property
    def compare_dir(self) -> Path | None:
        folder = self.out / COMPARE_DIR
        return folder if any(r.compare for r in self.rows) and folder.is_dir() else None


@dataclass(frozen=True)
class Job:
    """One capture and the files its restoration writes."""

    capture: Capture
    outputs: dict[str, Path]  # routing mode -> PNG
    strip: Path | None


def plan(captures: list[Capture], modes: list[str], out: Path, compare: bool) -> list[Job]:
    """Where every capture's outputs go: ``out/RELATIVE.png`` (``out/MODE/RELATIVE.png`` for several
    modes) and ``out/compare/RELATIVE.png``. Two files may not share an output, and no output may be an
    input: both are errors before any work."""
    jobs = []
    for capture in captures:
        relative = capture.relative.with_suffix(".png")
        outputs = {m: out / (relative if len(modes) == 1 else Path(m) / relative) for m in modes}
        jobs.append(Job(capture, outputs, out / COMPARE_DIR / relative if compare else None))
    inputs = {c.path.resolve(): c.path for c in captures}
    writers: dict[Path, Path] = {}
    for job in jobs:
        for path in [*job.outputs.values(), *([job.strip] if job.strip else [])]:
            resolved = path.resolve()
            if resolved in inputs:
                raise RestoreError(
                    f"--out {out}: would write {path} over the input {inputs[resolved]}; choose another --out"
                )
            if resolved in writers:
                raise RestoreError(
                    f"{writers[resolved]} and {job.capture.path} would both be written to {path}; rename "
                    "one or restore them into different --out folders"
                )
            writers[resolved] = job.capture.path
    return jobs


@dataclass
class Setup:
    dist_info: Dist
    device: torch.device
    model: torch.nn.Module
    modes: list[str]
    key: dict

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]


def prepare(cfg: RestoreConfig) -> Setup:
    modes = cfg.modes
    dist_info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, dist_info)
    inference.check_precision(cfg.precision, device)
    if cfg.tile is not None and cfg.tile <= cfg.tile_overlap:
        raise RestoreError(f"--tile {cfg.tile}: must be larger than --tile-overlap ({cfg.tile_overlap})")
    loaded = build.load_model(
        cfg.model,
        checkpoint=cfg.checkpoint,
        zoo=zoo.load_zoo(zoo.zoo_dirs(list(cfg.zoo_dirs))),
        param_key=cfg.param_key,
        cast_weights=cfg.cast_weights,
    )
    model, checkpoint = loaded.model, loaded.checkpoint
    if not has_router(model) and modes != [AUTO]:
        raise RestoreError(
            f"--routing {cfg.routing}: {cfg.model} has no router or experts; only auto applies"
        )
    model = inference.prepare(model, device, cfg.compile)
    key = {
        "model": cfg.model,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        # the entry of the file the weights came from, however it was chosen (option or zoo entry)
        **({"param_key": loaded.weights.param_key} if loaded.weights and loaded.weights.param_key else {}),
        "routing": cfg.routing,
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap,
        "precision": cfg.precision,
    }
    return Setup(dist_info, device, model, modes, key)


def signature(job: Job, out: Path) -> str:
    """What a manifest line was made from: the capture as it is on disk (path, size, modification time)
    and where its outputs went. A changed file, or outputs planned elsewhere, are restored again; the
    strip is not part of it (``earlier_rows`` asks for it when it is wanted)."""
    stat = job.capture.path.stat()
    return json.dumps(
        {
            "source": str(job.capture.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "outputs": {m: str(p.relative_to(out)) for m, p in job.outputs.items()},
        },
        sort_keys=True,
    )


def read_manifest(out: Path, key_hash: str) -> dict[str, dict[str, Restored]]:
    """signature -> mode -> row, from every rank's manifest lines made with the settings ``key_hash``
    (a line torn by a kill is left out)."""
    done: dict[str, dict[str, Restored]] = {}
    for path in sorted(out.glob(f"{MANIFEST_PREFIX}*.jsonl")):
        for row in read_jsonl(path):
            if row.get("key") != key_hash or not isinstance(row.get("job"), str):
                continue
            try:
                restored = Restored.from_json(row)
            except TypeError:
                continue
            done.setdefault(row["job"], {})[restored.mode] = restored
    return done


def earlier_rows(
    done: dict[str, Restored], modes: list[str], out: Path, compare: bool
) -> list[Restored] | None:
    """The rows of every mode, when an earlier run wrote them all (with their strip, when ``compare``) and
    their files are still there."""
    if not all(m in done for m in modes):
        return None
    rows = [done[m] for m in modes]
    if compare and not all(r.compare for r in rows):
        return None
    files = [r.output for r in rows] + [r.compare for r in rows if r.compare]
    return rows if all((out / f).is_file() for f in files) else None


class Manifest:
    """This rank's manifest of restored images, appended after cutting off a line torn by a kill."""

    def __init__(self, out: Path, rank: int):
        self.path = out / f"{MANIFEST_PREFIX}.rank{rank}.jsonl"
        cut_torn_tail(self.path)

    def append(self, job_signature: str, key_hash: str, rows: list[Restored]) -> None:
        append_jsonl(self.path, [{"key": key_hash, "job": job_signature, **r.to_json()} for r in rows])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _write(path: Path, image, bits: int = 8) -> None:
    try:
        write_png(path, image, bits)
    except OSError as e:
        raise RestoreError(f"{path}: cannot write the restored image ({e.strerror or e})") from None


def panel_label(mode: str, view: dict, modes: int) -> str:
    """A strip panel's label: the routing and, for auto, the task the router chose and how sure it was."""
    if mode == AUTO and view:
        what = f"auto: {TASK_SHORT[view['pred_task']]} {100 * max(view['router_probs']):.0f}%"
    else:
        what = f"{TASK_SHORT.get(mode, mode)}{' (forced)' if mode != AUTO else ''}"
    return what if modes > 1 else f"restored, {what}"


def restore_job(setup: Setup, cfg: RestoreConfig, job: Job, image, bits: int) -> list[Restored]:
    """Restore one capture (HxWx3 float array) in every routing mode; write its PNGs and its strip."""
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(setup.device)
    out, panels, rows = Path(cfg.out), [("input", image)], []
    for mode in setup.modes:
        _sync(setup.device)
        started = time.perf_counter()
        routed = inference.restore(
            setup.model, x, mode, tile=cfg.tile, overlap=cfg.tile_overlap, precision=cfg.precision
        )
        _sync(setup.device)
        seconds = time.perf_counter() - started
        restored = routed["output"][0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        _write(job.outputs[mode], restored, bits)
        view = router_view(setup.model, routed, 0)
        rows.append(
            Restored(
                file=str(job.capture.path),
                mode=mode,
                output=str(job.outputs[mode].relative_to(out)),
                width=image.shape[1],
                height=image.shape[0],
                bits=bits,
                seconds=round(seconds, 6),
                pred_task=view.get("pred_task"),
                router_probs=view.get("router_probs"),
                experts=view.get("experts"),
                compare=str(job.strip.relative_to(out)) if job.strip else None,
            )
        )
        if job.strip is not None:
            panels.append((panel_label(mode, view, len(setup.modes)), restored))
    if job.strip is not None:
        _write(job.strip, compare_strip(panels))
    return rows


def restore_captures(cfg: RestoreConfig, progress: bool = False, say: Callable[[str], None] | None = None):
    """Restore every capture ``cfg.inputs`` name; returns the ``RestoreResult`` (rank 0; None on the other
    ranks). ``say`` gets the one-line notices: conversions to RGB, unreadable files (skipped)."""
    say = say or (lambda line: None)
    started = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"--out {out}: is a file, not a folder; choose a folder for the restored images")
    for given in cfg.inputs:
        if Path(given).is_dir() and Path(given).resolve() == out.resolve():
            raise RestoreError(f"--out {out}: is the input folder {given}; choose another --out")
    jobs = plan(find_captures(cfg.inputs, skip=out), cfg.modes, out, cfg.compare)
    setup = prepare(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RestoreError(
            f"--out {out}: cannot create the folder ({e.strerror}); choose another --out"
        ) from None
    dist_info = setup.dist_info
    done = read_manifest(out, setup.key_hash)
    rows: dict[int, list[Restored]] = {}
    todo = []
    for index in range(dist_info.rank, len(jobs), dist_info.world):
        signed = signature(jobs[index], out)
        earlier = earlier_rows(done.get(signed, {}), setup.modes, out, cfg.compare)
        if earlier is None:
            todo.append((index, signed))
        else:
            rows[index] = earlier
    skipped, failed = len(rows), []
    manifest = Manifest(out, dist_info.rank)
    with progress_bar(len(todo), "restore", "img", progress and dist_info.is_main) as bar:
        for index, signed in todo:
            job = jobs[index]
            try:
                info = probe_image(job.capture.path)
                image = read_capture(job.capture.path)
            except ImageReadError as e:
                failed.append((str(job.capture.path), e.reason))
                say(f"{job.capture.path}: cannot read it ({e.reason}); skipped")
                bar.update(1)
                continue
            if note := conversion_note(info):
                say(f"{job.capture.path}: {note}")
            rows[index] = restore_job(setup, cfg, job, image, info.bits)
            manifest.append(signed, setup.key_hash, rows[index])
            bar.update(1)
            if rows[index][0].pred_task:
                bar.set_postfix(task=rows[index][0].pred_task)
    parts = gather((rows, skipped, failed), dist_info)
    if not dist_info.is_main:
        return None
    merged = {i: r for part in parts for i, r in part[0].items()}
    result = RestoreResult(
        out=out,
        modes=setup.modes,
        rows=[row for i in sorted(merged) for row in merged[i]],
        restored=len(merged) - sum(p[1] for p in parts),
        skipped=sum(p[1] for p in parts),
        failed=[f for p in parts for f in p[2]],
        key=setup.key,
        seconds=time.perf_counter() - started,
    )
    write_outputs(result, cfg, setup)
    return result


TABLE_COLUMNS = (
    "file",
    "mode",
    "output",
    "width",
    "height",
    "bits",
    "pred_task",
    "confidence",
    *(f"p_{t}" for t in TASKS),
    "experts",
    "seconds",
    "compare",
)


def restore_table(rows: list[Restored]):
    """One row per image and routing mode: the router's probabilities of the five tasks, the task it
    predicts and how sure it is, the experts each MoE block ran (one group per block), the seconds."""
    import pandas as pd

    records = []
    for r in rows:
        probs = dict(zip(TASKS, r.router_probs, strict=True)) if r.router_probs else {}
        records.append(
            {
                **{k: getattr(r, k) for k in ("file", "mode", "output", "width", "height", "bits")},
                "pred_task": r.pred_task,
                "confidence": r.confidence,
                **{f"p_{t}": probs.get(t) for t in TASKS},
                "experts": " ".join(",".join(map(str, e)) for e in r.experts) if r.experts else None,
                "seconds": r.seconds,
                "compare": r.compare,
            }
        )
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS))


def write_outputs(result: RestoreResult, cfg: RestoreConfig, setup: Setup) -> None:
    """``restore.csv`` and ``restore.parquet`` (the table) and ``restore.json`` (settings and summary)."""
    out, table = result.out, restore_table(result.rows)
    atomic_write(out / f"{TABLE_STEM}.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    atomic_write(out / f"{TABLE_STEM}.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    summary = {
        "config": cfg.to_dict(),
        "key": result.key,
        "modes": result.modes,
        "images": result.images,
        "restored": result.restored,
        "skipped": result.skipped,
        "failed": [{"file": f, "reason": reason} for f, reason in result.failed],
        "seconds_per_image": result.seconds_per_image,
        "wall_seconds": result.seconds,
        "device": str(setup.device),
        "threads": torch.get_num_threads(),
        "world_size": setup.dist_info.world,
        "versions": versions(),
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1, sort_keys=True))
