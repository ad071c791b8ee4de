"""The results folder of an evaluation: its key (the settings its records were made with), the records
appended batch by batch (so a killed run resumes where it stopped), the summary, the per-image table,
the per-image timing, expert usage, figures and saved sample images. MLflow logging reads only this
folder, so ``demoe-eval log RESULTS_DIR`` can log it later.

Two identical evaluations write the same bytes but for what a clock measured: ``results.json``'s
``timing`` field and ``timing.csv`` (forward seconds per image); ``per_image.csv``/``.parquet`` hold
no seconds.
"""

import json
import os
import platform
import subprocess
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from demoe.data.captures import compare_strip, write_png
from demoe.errors import DemoeError
from demoe.fileio import append_jsonl, atomic_write, atomic_write_text, cut_torn_tail, read_jsonl
from demoe.metrics.figures import confusion_figure, expert_usage_figure, save_figure
from demoe.paths import PROJECT_ROOT
from demoe.records import EvalResult, ImageRecord
from demoe.vocab import TASKS

RESULTS_FILE = "results.json"
TABLE_STEM = "per_image"
TIMING_FILE = "timing.csv"
RECORDS_PREFIX = "records"
KEY_FILE = "run_key.json"
STRIPS = "strips"  # the comparison strips of a benchmark without sharp images, one PNG per image
ARTIFACTS = (
    RESULTS_FILE,
    "config.yaml",
    f"{TABLE_STEM}.parquet",
    f"{TABLE_STEM}.csv",
    TIMING_FILE,
    "expert_usage.json",
    "expert_usage.png",
    "expert_usage.svg",
    "confusion.png",
    "confusion.svg",
)


class ResultsError(DemoeError):
    pass


def claim(out: Path, run_key: dict) -> None:
    """Make ``out`` the results folder of the settings ``run_key``; refuses one made with other settings."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ResultsError(f"--out {out}: is a file, not a folder; choose another --out") from None
    except OSError as e:
        raise ResultsError(
            f"--out {out}: cannot create the results folder ({e.strerror}); choose another --out"
        ) from None
    key_file = out / KEY_FILE
    if key_file.exists():
        old = json.loads(key_file.read_text())
        if old != run_key:
            changed = sorted(k for k in run_key if old.get(k) != run_key[k])
            raise ResultsError(
                f"--out {out}: holds results made with other settings ({', '.join(changed)}); "
                "use another --out or delete that folder"
            )
    atomic_write_text(key_file, json.dumps(run_key, indent=1, sort_keys=True))


def read_records(out: Path) -> list[ImageRecord]:
    """Every complete record of every rank's file (a torn last line from a kill is ignored)."""
    rows = []
    for path in sorted(Path(out).glob(f"{RECORDS_PREFIX}*.jsonl")):
        rows += read_jsonl(path)
    return [ImageRecord.from_json(r) for r in rows]


class RecordsFile:
    """This rank's records file, opened for appending after cutting off a line torn by a kill."""

    def __init__(self, out: Path, rank: int):
        self.path = Path(out) / f"{RECORDS_PREFIX}.rank{rank}.jsonl"
        cut_torn_tail(self.path)

    def append(self, records: list[ImageRecord]) -> None:
        append_jsonl(self.path, [r.to_json() for r in records])


def unique_records(records: list[ImageRecord]) -> list[ImageRecord]:
    """One record per (mode, image), in a deterministic order."""
    seen: dict[tuple[str, str], ImageRecord] = {}
    for r in records:
        seen.setdefault(r.key, r)
    return [seen[k] for k in sorted(seen)]


def write_results(out: Path, result: EvalResult, records: list[ImageRecord]) -> None:
    """Write the summary, the per-image table, expert usage and figures of an evaluation into ``out``."""
    out = Path(out)
    result = replace(result, versions=versions())
    atomic_write_text(out / RESULTS_FILE, json.dumps(result.to_json(), indent=1, sort_keys=True))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(result.config, sort_keys=True))
    table = per_image_table(records)
    atomic_write(out / f"{TABLE_STEM}.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    atomic_write(out / f"{TABLE_STEM}.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    timing = timing_table(records)
    atomic_write(out / TIMING_FILE, lambda tmp: timing.to_csv(tmp, index=False, float_format="%.6f"))

    usage = {mode: s.expert_usage for mode, s in result.results.items() if s.expert_usage}
    if usage:
        atomic_write_text(out / "expert_usage.json", json.dumps(usage, indent=1, sort_keys=True))
        if "auto" in usage:
            title = f"{result.model} on {result.bench}: expert usage (auto routing)"
            save_figure(expert_usage_figure(usage["auto"], title), out / "expert_usage.png")
    auto = result.summary("auto")
    if auto is not None and auto.confusion is not None:
        title = f"{result.model} on {result.bench}: router"
        save_figure(
            confusion_figure(auto.confusion.matrix, auto.confusion.labels, title), out / "confusion.png"
        )


def timing_table(records: list[ImageRecord]):
    """One row per (routing mode, image): the forward seconds per image of its batch (0 for identity)."""
    import pandas as pd

    table = pd.DataFrame(
        [{"mode": r.mode, "name": r.name, "seconds": r.seconds} for r in records],
        columns=["mode", "name", "seconds"],
    )
    return table.sort_values(["mode", "name"], kind="stable").reset_index(drop=True)


def per_image_table(records: list[ImageRecord]):
    """One row per (routing mode, image): metrics and the router's view of the image (no seconds: they
    are in ``timing_table``, so that the table of a repeated evaluation is the same)."""
    import pandas as pd

    rows = []
    for r in records:
        base = {"label": r.label, "mode": r.mode, "name": r.name, **r.scores}
        if r.router_probs is not None:
            base["pred_task"] = r.pred_task
        row = dict(sorted(base.items()))
        if r.router_probs is not None:
            row |= {f"p_{task}": p for task, p in zip(TASKS, r.router_probs, strict=False)}
            row["experts"] = " ".join(",".join(map(str, e)) for e in r.experts or ())
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["mode", "name"], kind="stable").reset_index(drop=True)


def read_results(folder: Path) -> EvalResult:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(
            f"{folder}: no {RESULTS_FILE}; is it the --out folder of a finished `demoe-eval run`?"
        )
    try:
        return EvalResult.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultsError(
            f"{path}: not a complete results file ({type(e).__name__}: {str(e)[:120]}); run the same "
            f"`demoe-eval run ... --out {folder}` again: it rewrites it from the scored records"
        ) from None


def sample_path(folder: Path, name: str, tag: str) -> Path:
    """Where ``save_sample`` puts image ``name``'s ``tag`` (blurred, sharp or a routing mode)."""
    return Path(folder) / f"{name.replace('/', '__')}__{tag}.png"


def save_sample(folder: Path, name: str, mode: str, blurred, restored, sharp=None) -> None:
    """Save the restored image of one mode, and the blurred and sharp (if any) images once, as 8-bit PNG."""
    from PIL import Image

    for tag, image in (("blurred", blurred), (mode, restored), ("sharp", sharp)):
        if image is None:
            continue
        path = sample_path(folder, name, tag)
        if path.exists() and tag != mode:
            continue
        array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(
            "uint8"
        )
        atomic_write(path, lambda tmp, a=array: Image.fromarray(a).save(tmp, format="PNG"))


def strip_path(folder: Path, name: str) -> Path:
    """Where ``save_strip`` puts image ``name``'s strip."""
    return Path(folder) / f"{name.replace('/', '__')}.png"


def save_strip(folder: Path, name: str, panels: list) -> Path:
    """Image ``name``'s (label, (3, H, W) tensor in [0, 1]) panels side by side, each under its label, as
    8-bit PNG: the strips ``demoe-eval restore --compare`` draws."""
    arrays = [
        (label, image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()) for label, image in panels
    ]
    return write_png(strip_path(folder, name), compare_strip(arrays))


def source_commit() -> str | None:
    """demoe-eval's own git commit when it runs from a checkout of demoe-eval (not from a wheel inside
    some other repository, whose commit is not ours)."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = top.stdout.split()
    if top.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != PROJECT_ROOT.resolve():
        return None
    return lines[1]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("demoe-eval", "torch", "torchvision", "pyiqa", "mlflow", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    out["git_commit"] = source_commit()
    return out


def results_folder_is_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot hold results (a file, or a read-only folder)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: is a file, not a folder; choose a folder for the results")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResultsError(f"--out {out}: {probe} is not writable; choose a folder you can write to")
