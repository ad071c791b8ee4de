"""A finished finetuning's best checkpoint becomes a zoo entry (``demoe-eval run --model NAME`` works at
once) and, when MLflow tracks the run, a version of the registered MLflow model of the same name (the
zoo entry names that version)."""

from datetime import datetime
from pathlib import Path

import yaml

from demoe.data.pairs import Benchmark
from demoe.fileio import atomic_write_text, sha256_file
from demoe.finetune.model import StartModel
from demoe.finetune.options import RunOptions, validation_set
from demoe.finetune.state import TrainState
from demoe.paths import demoe_home
from demoe.registry import zoo
from demoe.registry.checkpoints import extract_state_dict, read_checkpoint, save_checkpoint
from demoe.tracking.mlflow_runs import FinetuneTracker


def weights_licence(start: zoo.ZooEntry | None, pretrained_from: Path | None) -> str:
    """What the licence of trained weights follows from: the weights they started from, if any."""
    if pretrained_from is None:
        return "the trainer's own: trained from scratch with demoe-eval (mind the training data's licence)"
    if start is not None and start.licence:
        return f"derived from {start.name}'s weights: {start.licence}"
    return f"derived from {pretrained_from.name}: the licence of those weights"


def keep_earlier_entry(zoo_dir: Path, name: str, run_dir: Path) -> str | None:
    """An entry ``name`` in ``zoo_dir`` that another run made (or someone wrote by hand) is kept as
    ``NAME-YYYYmmdd-HHMMSS`` (its YAML and weights renamed, its name rewritten), so that registering
    never replaces a model silently; returns the name it is kept under."""
    path = zoo_dir / f"{name}.yaml"
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        doc = None  # not an entry we can read: kept as it is, under the dated name
    made_by = (doc.get("info") or {}).get("run_dir") if isinstance(doc, dict) else None
    if isinstance(made_by, str) and Path(made_by).resolve() == Path(run_dir).resolve():
        return None  # this run's own entry: a resumed run registers again
    kept = f"{name}-{datetime.fromtimestamp(path.stat().st_mtime):%Y%m%d-%H%M%S}"
    if not isinstance(doc, dict):
        path.replace(zoo_dir / f"{kept}.yaml.unreadable")
        return kept
    doc["name"] = kept
    checkpoint, move = doc.get("checkpoint"), None
    if isinstance(checkpoint, dict) and checkpoint.get("path") == f"weights/{name}.safetensors":
        move = (zoo_dir / checkpoint["path"], zoo_dir / "weights" / f"{kept}.safetensors")
        checkpoint |= {"file": move[1].name, "path": f"weights/{move[1].name}"}
    # the kept entry is written before anything moves: a failure leaves the original entry whole
    atomic_write_text(
        zoo_dir / f"{kept}.yaml", yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
    )
    if move and move[0].is_file():
        move[0].replace(move[1])
    path.unlink()
    return kept


def register_zoo_entry(
    zoo_dir: Path,
    name: str,
    arch: str,
    kwargs: dict,
    best: Path,
    description: str,
    info: dict,
    licence: str | None = None,
) -> Path:
    """Write the best checkpoint as ``weights/NAME.safetensors`` and its zoo entry ``NAME.yaml`` into ``zoo_dir``."""
    zoo_dir = Path(zoo_dir)
    state = extract_state_dict(read_checkpoint(best), best)
    weights = save_checkpoint(zoo_dir / "weights" / f"{name}.safetensors", state, name=name)
    entry = {
        "name": name,
        "arch": arch,
        "kwargs": kwargs,
        "description": description,
        "checkpoint": {
            "file": weights.name,
            "path": f"weights/{weights.name}",
            "sha256": sha256_file(weights),
            "size": weights.stat().st_size,
        },
        **({"licence": licence} if licence else {}),
        "info": info,
    }
    return atomic_write_text(
        zoo_dir / f"{name}.yaml", yaml.safe_dump(entry, sort_keys=False, default_flow_style=None, width=110)
    )


def register(
    cfg: dict,
    opts: RunOptions,
    run_dir: Path,
    start: StartModel,
    state: TrainState,
    bench: Benchmark,
    tracker: FinetuneTracker,
    validation: dict | None,
) -> dict:
    """Register ``run_dir``'s best checkpoint as the zoo model ``cfg['name']``; returns what was made."""
    has_val = validation_set(cfg) is not None
    best = run_dir / "models" / "best.pt"
    info = {
        "run_id": state.run_id,
        "run_dir": str(run_dir),
        "step": state.best_step if has_val else state.step,
        "trained_on": f"{bench.spec.name}/{bench.split}",
        "started_from": cfg["model"] or "scratch",
    }
    if validation:
        info["validation"] = {
            "bench": validation_set(cfg),
            **{k: round(float(v), 4) for k, v in validation.items()},
        }
    tracker.artifact(best, "best")
    made = {"best": str(best)}
    model_name = registered_model_name(cfg)
    if model_name:
        version = tracker.register(model_name, cfg["logger"]["model_alias"], "best")
        if version is not None:
            made["mlflow_model_version"] = version
            info["mlflow_model"] = f"models:/{model_name}/{version}"
    zoo_dir = Path(opts.zoo_dir or demoe_home() / "zoo")
    description = cfg["description"] or f"{start.arch} trained with demoe-eval finetune ({cfg['name']})."
    licence = weights_licence(start.entry, start.weights)
    kept = None if opts.replace_entry else keep_earlier_entry(zoo_dir, cfg["name"], run_dir)
    if kept:
        print(f"the earlier zoo entry {cfg['name']!r} is kept as {kept!r}", flush=True)
    entry = register_zoo_entry(
        zoo_dir, cfg["name"], start.arch, start.kwargs, best, description, info, licence
    )
    made["zoo_entry"] = str(entry)
    print(f"finished: best {best} registered as zoo model {cfg['name']!r} in {entry}", flush=True)
    if "mlflow_model_version" in made:
        print(f"and as MLflow model {info['mlflow_model']}", flush=True)
    tracker.artifact(entry, "zoo")
    return made


def registered_model_name(cfg: dict) -> str | None:
    """The MLflow model the best checkpoint becomes a version of: ``logger.register_model``, by default
    the run's name; ``false`` registers in the zoo only."""
    name = cfg["logger"]["register_model"]
    if name is False:
        return None
    return str(name or cfg["name"])
