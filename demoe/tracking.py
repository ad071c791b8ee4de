"""Results on disk and everything MLflow.

An evaluation first writes its results folder (``results.json``, the per-image table, expert usage,
figures); logging to MLflow then reads only that folder, so ``demoe-eval log RESULTS_DIR`` can log
it later when the tracking server was unreachable. Only global rank 0 calls anything here.

MLflow layout: a parent run ``MODEL@BENCH`` (tags ``demoe.kind=eval``, ``demoe.model``,
``demoe.bench``, ``demoe.checkpoint_sha256``, ``demoe.bench_fingerprint``; the resolved config as
params and YAML) with one child run per routing mode (tag ``demoe.routing``; metrics named as the
pyiqa metric, plus ``routing_accuracy`` and ``seconds_per_image``).
"""

import json
import logging
import os
from pathlib import Path

import yaml

from demoe.errors import DemoeError
from demoe.fileio import atomic_write, atomic_write_text

RESULTS_FILE = "results.json"
TABLE_STEM = "per_image"


class TrackingError(DemoeError):
    pass


# ----------------------------------------------------------------------------- results on disk


def write_results(out: Path, results: dict, records: list[dict]) -> None:
    """Write the summary, the per-image table, expert usage and figures of an evaluation into ``out``."""

    from demoe.report.figures import confusion_figure, expert_usage_figure, save_figure

    out = Path(out)
    results = {**results, "versions": versions()}
    atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=1, sort_keys=True))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(results["config"], sort_keys=True))
    table = per_image_table(records)
    atomic_write(out / f"{TABLE_STEM}.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    atomic_write(out / f"{TABLE_STEM}.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))

    usage = {mode: r["expert_usage"] for mode, r in results["results"].items() if "expert_usage" in r}
    if usage:
        atomic_write_text(out / "expert_usage.json", json.dumps(usage, indent=1, sort_keys=True))
        title = f"{results['model']} on {results['bench']}: expert usage (auto routing)"
        if "auto" in usage:
            save_figure(expert_usage_figure(usage["auto"], title), out / "expert_usage.png")
    confusion = results["results"].get("auto", {}).get("confusion")
    if confusion:
        fig = confusion_figure(
            confusion["rows_true_cols_predicted"],
            confusion["labels"],
            f"{results['model']} on {results['bench']}: router",
        )
        save_figure(fig, out / "confusion.png")


def per_image_table(records: list[dict]):
    """One row per (routing mode, image): metrics, seconds, and the router's view of the image."""
    import pandas as pd

    from demoe.vocab import TASKS

    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("router_probs", "experts")}
        for task, p in zip(TASKS, r.get("router_probs") or [], strict=False):
            row[f"p_{task}"] = p
        if r.get("experts") is not None:
            row["experts"] = " ".join(",".join(map(str, e)) for e in r["experts"])
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["mode", "name"], kind="stable").reset_index(drop=True)


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


def versions() -> dict:
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("demoe-eval", "torch", "torchvision", "pyiqa", "mlflow", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    from demoe.paths import PROJECT_ROOT

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        )
        out["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def read_results(folder: Path) -> dict:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise TrackingError(
            f"{folder}: no {RESULTS_FILE}; is it the --out folder of a finished `demoe-eval run`?"
        )
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- MLflow


def set_tracking(tracking_uri: str | None, experiment: str | None) -> str:
    """Point MLflow at ``tracking_uri`` (else ``MLFLOW_TRACKING_URI``, else MLflow's default) and ``experiment``."""
    import mlflow

    # MLflow announces at INFO that it creates the tables of a new SQLite store; its warnings still show
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if experiment:
        mlflow.set_experiment(experiment)
    return mlflow.get_tracking_uri()


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def log_results(
    folder: Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Log a results folder as a parent run with one child per routing mode; returns the parent run id."""
    folder = Path(folder)
    results = read_results(folder)
    try:
        return _log_results(folder, results, tracking_uri, experiment, parent_run_id)
    except TrackingError:
        raise
    except Exception as e:  # any failure to reach or write the store leaves the results on disk
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default store"
        raise TrackingError(
            f"could not log to MLflow at {uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"the results are kept in {folder}: log them later with `demoe-eval log {folder}`"
        ) from None


def _log_results(folder: Path, results: dict, tracking_uri, experiment, parent_run_id) -> str:
    import mlflow

    set_tracking(tracking_uri, experiment)
    model, bench = results["model"], results["bench"]
    info = results["model_info"]
    tags = {
        "demoe.kind": "eval",
        "demoe.model": model,
        "demoe.bench": bench,
        "demoe.split": results["split"],
        "demoe.checkpoint_sha256": info.get("checkpoint_sha256") or "none",
        "demoe.bench_fingerprint": results["bench_info"]["fingerprint"],
        "demoe.k_used": str(info["kwargs"].get("k_used", "")),
        "demoe.params": str(info["params"]),
        "demoe.results_dir": str(folder.resolve()),
    }
    if results["bench_info"].get("protocol_note"):
        tags["demoe.protocol_note"] = results["bench_info"]["protocol_note"]
    if results.get("metrics_unavailable"):
        tags["demoe.metrics_unavailable"] = "; ".join(
            f"{k}: {v}" for k, v in results["metrics_unavailable"].items()
        )
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_name = results.get("run_name", f"{model}@{bench}")
    with mlflow.start_run(run_name=run_name, tags=tags) as parent:
        mlflow.log_params(flat_params({"config": results["config"], "protocol": results["protocol"]}))
        for name in (
            RESULTS_FILE,
            "config.yaml",
            f"{TABLE_STEM}.parquet",
            f"{TABLE_STEM}.csv",
            "expert_usage.json",
            "expert_usage.png",
            "expert_usage.svg",
            "confusion.png",
            "confusion.svg",
        ):
            if (folder / name).exists():
                mlflow.log_artifact(str(folder / name))
        if (folder / "samples").is_dir():
            mlflow.log_artifacts(str(folder / "samples"), artifact_path="samples")
        for mode, summary in results["results"].items():
            metrics = dict(summary["metrics"])
            for key in ("routing_accuracy", "seconds_per_image"):
                if summary.get(key) is not None:
                    metrics[key] = summary[key]
            metrics["images"] = summary["images"]
            with mlflow.start_run(
                run_name=f"{run_name}:{mode}",
                nested=True,
                tags={**tags, "demoe.routing": mode, "mlflow.parentRunId": parent.info.run_id},
            ):
                mlflow.log_metrics(metrics)
        return parent.info.run_id


def start_sweep(name: str, doc: dict, tracking_uri: str | None, experiment: str | None) -> str:
    """Create the parent run of a sweep (tag ``demoe.kind=sweep``) and return its id."""
    import mlflow

    try:
        set_tracking(tracking_uri, experiment)
        with mlflow.start_run(run_name=name, tags={"demoe.kind": "sweep"}) as run:
            mlflow.log_params(flat_params({"sweep": doc}))
            mlflow.log_text(yaml.safe_dump(doc, sort_keys=False), "sweep.yaml")
            return run.info.run_id
    except Exception as e:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default store"
        raise TrackingError(
            f"could not log to MLflow at {uri} ({type(e).__name__}); rerun with --no-tracking "
            "and log each results folder later with `demoe-eval log DIR`"
        ) from None
