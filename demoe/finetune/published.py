"""The option files of the published DeMoE scripts (``options/train/*.yml``, read by its ``finetune.py``),
recognised by their keys and translated into demoe-eval options before the run; the translation is
printed, and the equivalent demoe-eval file is saved in the run folder so that it can replace the
published one for good.

The published format::

    experiment_name: NAME
    network: {name: DeMoE, img_channels, width, middle_blk_num, enc_blk_nums, dec_blk_nums, num_experts, k_used}
    datasets:
      train: {meta_dir: BLURRED_FOLDER, gt_dir: SHARP_FOLDER}
      val: {meta_dir: ..., gt_dir: ...}          (optional; test: is read the same way)
    train: {epochs, patch_size, batch_size, num_workers, augment, lr, min_lr, amp, task, save_every, val_every}

Its paths are relative to the folder the command runs in, as the published scripts read them.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

from demoe.config import ConfigError, apply_overrides, dump_config, find_experiment_file
from demoe.data.pairs import PAIR_FOLDERS, resolve
from demoe.fileio import atomic_write_bytes, atomic_write_text
from demoe.registry import zoo
from demoe.vocab import AUTO, ORACLE, TASKS

# published network keyword -> demoe-eval's (the DeMoE constructor's)
NETWORK_KEYS = {
    "img_channels": "img_channel",
    "width": "width",
    "middle_blk_num": "middle_blk_num",
    "enc_blk_nums": "enc_blk_nums",
    "dec_blk_nums": "dec_blk_nums",
    "num_experts": "num_exp",
    "k_used": "k_used",
}
TRAIN_KEYS = (
    "epochs",
    "patch_size",
    "batch_size",
    "num_workers",
    "augment",
    "lr",
    "min_lr",
    "amp",
    "task",
    "save_every",
    "val_every",
)
FOLDER_KEYS = ("meta_dir", "gt_dir")
DATASET_PARTS = ("train", "val", "test")
PUBLISHED_MODEL = "DeMoE"  # the zoo entry of the published weights, which the published scripts start from


def is_published(doc: dict) -> bool:
    """Whether an option file is in the published format (demoe-eval's has none of these keys)."""
    datasets = doc.get("datasets") if isinstance(doc.get("datasets"), dict) else {}
    return (
        "network" in doc
        or "experiment_name" in doc
        or any(isinstance(p, dict) and set(p) & set(FOLDER_KEYS) for p in datasets.values())
    )


def _is_published_key(key: str) -> bool:
    parts = key.strip().split(".")
    if parts[0] in ("experiment_name", "network"):
        return True
    if parts[0] == "datasets" and len(parts) == 3:
        return parts[1] in DATASET_PARTS and parts[2] in FOLDER_KEYS
    return parts[0] == "train" and len(parts) == 2 and parts[1] in TRAIN_KEYS


@dataclass
class Translation:
    options: dict  # the equivalent demoe-eval options (before the --set that name demoe-eval keys)
    overrides: list[str]  # the --set items in demoe-eval's keys, applied to ``options`` as usual
    lines: list[str]  # what was translated into what, to print

    def equivalent(self) -> dict:
        """The demoe-eval options of this run: the translation with every --set applied."""
        return apply_overrides(self.options, self.overrides)


def _check_keys(doc: dict, source: str) -> None:
    known = {"experiment_name", "network", "datasets", "train"}
    problems = [f"{k} (known: {', '.join(sorted(known))})" for k in doc if k not in known]
    for section, keys in (("network", ["name", *NETWORK_KEYS]), ("train", TRAIN_KEYS)):
        value = doc.get(section) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {section} must be a mapping (the published format)")
        problems += [f"{section}.{k} (known: {', '.join(keys)})" for k in value if k not in keys]
    datasets = doc.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise ConfigError(
            f"{source}: datasets must be a mapping of train, val and test (the published format)"
        )
    for part, value in datasets.items():
        if part not in DATASET_PARTS or not isinstance(value, dict) or set(value) - set(FOLDER_KEYS):
            problems.append(
                f"datasets.{part} (known: {', '.join(DATASET_PARTS)}, each with meta_dir and gt_dir)"
            )
    if problems:
        raise ConfigError(
            f"{source}: a published DeMoE option file with unknown options: {'; '.join(problems)}"
        )


def _network(network: dict, source: str) -> tuple[dict, str]:
    """``model``/``k`` or ``network_g`` options for the published ``network`` section, and what it became."""
    if network.get("name", PUBLISHED_MODEL) != "DeMoE":
        raise ConfigError(
            f"{source}: network.name {network.get('name')!r}: the published scripts build DeMoE"
        )
    kwargs = {NETWORK_KEYS[k]: v for k, v in network.items() if k != "name"}
    entry = zoo.get_entry(PUBLISHED_MODEL)
    published = {k: v for k, v in entry.kwargs.items() if k != "k_used"}
    if {**published, **{k: v for k, v in kwargs.items() if k != "k_used"}} == published:
        k = kwargs.get("k_used", entry.kwargs.get("k_used"))
        extra = {} if k == entry.kwargs.get("k_used") else {"k": k}
        return {"model": PUBLISHED_MODEL, "pretrained": True, **extra}, (
            f"network DeMoE (the published configuration{f', k_used {k}' if extra else ''}) -> "
            f"model: {PUBLISHED_MODEL}, from its published weights (or --checkpoint)"
        )
    network_g = {"type": "DeMoE", **{k: v for k, v in entry.kwargs.items() if k not in kwargs}, **kwargs}
    return {"network_g": network_g}, (
        "network DeMoE of another size -> network_g (from scratch, or from --checkpoint): "
        + ", ".join(f"{k} {v}" for k, v in network_g.items() if k != "type")
    )


def _folder_bench(part: str, folders: dict, source: str) -> tuple[str, int]:
    """The folder benchmark of ``meta_dir`` + ``gt_dir`` (two sibling folders of a known pair of names),
    and its number of pairs."""
    missing = [k for k in FOLDER_KEYS if not folders.get(k)]
    if missing:
        raise ConfigError(
            f"{source}: datasets.{part} needs {' and '.join(FOLDER_KEYS)} (missing {', '.join(missing)})"
        )
    meta, gt = Path(str(folders["meta_dir"])), Path(str(folders["gt_dir"]))
    for key, folder in (("meta_dir", meta), ("gt_dir", gt)):
        if not folder.is_dir():
            raise ConfigError(
                f"{source}: datasets.{part}.{key} {folder}: no such folder (relative to {Path.cwd()})"
            )
    if meta.parent.resolve() != gt.parent.resolve() or (meta.name, gt.name) not in PAIR_FOLDERS:
        names = ", ".join(f"{b}/+{s}/" for b, s in PAIR_FOLDERS)
        raise ConfigError(
            f"{source}: datasets.{part}: meta_dir and gt_dir must be two folders side by side named as one of "
            f"{names} (found {meta} and {gt}); rename them, or name a benchmark in demoe-eval options"
        )
    bench = resolve(str(meta.parent), split="all")
    return meta.parent.as_posix(), len(bench.pairs)


def _steps(epochs, per_epoch: int, key: str, source: str) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{source}: train.{key} must be a whole number of epochs >= 1, got {epochs!r}")
    return epochs * per_epoch


def translate(doc: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "options") -> Translation:
    """The demoe-eval options equivalent to a published option file; ``--set`` items naming published keys
    (train.epochs, network.width, ...) apply to the file before it is translated, the others after."""
    mine = [o for o in overrides if _is_published_key(o.partition("=")[0])]
    doc = apply_overrides(copy.deepcopy(doc), mine)
    _check_keys(doc, source)
    t, datasets = doc.get("train") or {}, doc.get("datasets") or {}
    if "train" not in datasets:
        raise ConfigError(f"{source}: datasets.train (meta_dir and gt_dir) is required")
    task = t.get("task")
    if task not in (None, AUTO, *TASKS):
        raise ConfigError(f"{source}: train.task {task!r}: use auto or a task: {', '.join(TASKS)}")
    task = None if task == AUTO else task
    model, network_line = _network(doc.get("network") or {}, source)
    train_bench, pairs = _folder_bench("train", datasets["train"], source)
    batch = t.get("batch_size", 8)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"{source}: train.batch_size must be a whole number >= 1, got {batch!r}")
    per_epoch = pairs // batch
    if per_epoch == 0:
        raise ConfigError(
            f"{source}: train.batch_size {batch} is more than the {pairs} training pairs in {train_bench}; "
            "lower it (--set train.batch_size=N)"
        )
    total = _steps(t.get("epochs", 1), per_epoch, "epochs", source)
    train_part = {"bench": train_bench, "split": "all", "task": task, "batch_size": batch}
    for key, ours in (("patch_size", "gt_size"), ("num_workers", "num_worker"), ("augment", "augment")):
        if key in t:
            train_part[ours] = t[key]
    name = {"name": str(doc["experiment_name"])} if doc.get("experiment_name") else {}
    options: dict = {**name, **model, "datasets": {"train": train_part}}
    options["train"] = {"total_iter": total, "routing": ORACLE if task else AUTO}
    options["train"] |= {"router_loss_weight": 0.0} if task else {}
    for key, ours in (("lr", "lr"), ("min_lr", "eta_min")):
        if key in t:
            options["train"][ours] = t[key]
    if "amp" in t:
        options["train"]["amp"] = "auto" if t["amp"] is True else ("none" if t["amp"] is False else t["amp"])
    if "save_every" in t:
        options["logger"] = {"save_checkpoint_freq": _steps(t["save_every"], per_epoch, "save_every", source)}
    val_part = datasets.get("val")
    val_line = ""
    if val_part or datasets.get("test"):
        val_freq = _steps(t.get("val_every", 1), per_epoch, "val_every", source)
        options["val"] = {"val_freq": val_freq, "routing": [ORACLE, AUTO] if task else [AUTO]}
        if val_part:
            val_bench, val_pairs = _folder_bench("val", val_part, source)
            options["datasets"]["val"] = {"bench": val_bench, "split": "all", "task": task}
            val_line = f"; validation on {val_bench} ({val_pairs} pairs) every {val_freq} steps"
        else:  # the published scripts validate on test; choosing checkpoints on it would bias its figures
            options["datasets"]["val"] = {"holdout": 0.1}
            val_line = (
                f"; validation on a held-out tenth of train every {val_freq} steps (datasets.test is "
                "not watched: it is reported once, with `demoe-eval run`)"
            )
    saves = options.get("logger", {}).get("save_checkpoint_freq")
    routing = (
        f"train.task {task} -> pairs labelled {task}, trained and validated through its experts "
        "(train.routing oracle, no router loss)"
        if task
        else "train.task auto -> the router decides (train.routing auto)"
    )
    lines = [
        f"{source} is a published DeMoE option file; read as demoe-eval options:",
        f"  {network_line}",
        f"  datasets.train meta_dir + gt_dir -> bench {train_bench} ({pairs} pairs){val_line}",
        f"  train.epochs {t.get('epochs', 1)} x {per_epoch} steps ({pairs} pairs // batch {batch}) -> "
        f"train.total_iter {total}" + (f"; checkpoints every {saves} steps" if saves else ""),
        "  train.patch_size -> datasets.train.gt_size, min_lr -> train.eta_min, amp true -> train.amp auto "
        "(bf16 on a GPU, off on a CPU)",
        f"  {routing}",
    ]
    return Translation(options, [o for o in overrides if o not in mine], lines)


EQUIVALENT_FILE = "options.yaml"  # the demoe-eval options of a run started from a published file
PUBLISHED_COPY = "published_options.yml"


def save(translation: Translation, published_file: Path, run_dir: Path) -> Path:
    """Write the equivalent demoe-eval options (``options.yaml``) and a copy of the published file into the
    run folder; returns the options file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / EQUIVALENT_FILE
    header = (
        f"# demoe-eval options equivalent to the published option file {published_file} (with the --set\n"
        f"# items of its run); its copy is {PUBLISHED_COPY}. Command-line options such as --checkpoint\n"
        f"# are not part of it. Run it with: demoe-eval finetune -c {path}\n"
    )
    atomic_write_text(path, header + dump_config(translation.equivalent()))
    atomic_write_bytes(run_dir / PUBLISHED_COPY, find_experiment_file(published_file).read_bytes())
    return path
