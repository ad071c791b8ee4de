"""The options of ``demoe-eval finetune``: a BasicSR-like YAML whose every option and default is
``DEFAULTS`` below, then ``--set`` overrides, then the command line's own options, checked key by key."""

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from demoe.config import ConfigError, ManifestCheck, apply_overrides
from demoe.errors import DemoeError
from demoe.net.losses import PIXEL_LOSSES
from demoe.net.training import MEMORY_FORMATS
from demoe.registry.zoo import network_kwargs_problems
from demoe.vocab import ARCHITECTURE_NAMES, MODEL_MODES, TASKS

STATE_FILE = "training_state.pt"


class TrainError(DemoeError):
    pass


DEFAULTS: dict = {
    "name": None,  # the run folder's name and the zoo name the best checkpoint is registered under
    "description": None,  # the registered zoo entry's description
    "model": None,  # zoo model to start from: its architecture, and its weights when `pretrained`
    "pretrained": True,  # start from the zoo model's checkpoint (or path.pretrain_network_g)
    "network_g": None,  # instead of `model`: an architecture to train from scratch, {type: DeMoE, width: 16, ...}
    "k": None,  # experts per MoE block, instead of the model's k_used
    "manual_seed": 0,
    "device": "auto",  # auto, cpu, cuda
    "datasets": {
        "train": {
            "bench": None,  # benchmark name, name/subset, or a folder with blur/ and sharp/
            "split": "train",
            "task": None,  # label every pair with this task (a benchmark without labels, e.g. DRMI)
            "limit": None,  # use only the first N pairs
            "gt_size": 128,  # side of the random training crops
            "augment": True,  # random flips and 90-degree rotations of the crops
            "batch_size": 8,  # the global batch, split over the processes
            "num_worker": 0,  # DataLoader workers per process
            # aio-synth only: instead of its fixed pairs, as many crops of its train photos per epoch,
            # each degraded afresh (new patches, kernels and noise every epoch)
            "synthesize": False,
        },
        "val": {
            "bench": None,
            "split": None,
            "task": None,
            "limit": None,
            "batch_size": 1,
            "num_worker": 0,
            "holdout": None,  # instead of bench: this fraction of the train split, seeded, held out of training
        },
    },
    "train": {
        "total_iter": 1000,
        "lr": 1e-3,
        "betas": [0.9, 0.9],
        "weight_decay": 0.0,
        "warmup_iter": 0,  # linear warmup steps, then cosine down to eta_min
        "eta_min": 1e-7,
        "grad_clip": 0.0,  # max gradient norm; 0 turns clipping off
        "amp": "auto",  # auto (bf16 on GPU, off on CPU), bf16, fp16, none
        "pixel_loss": "l1",  # l1 or charbonnier
        "fft_loss_weight": 0.0,
        "router_loss_weight": 0.1,  # cross-entropy of the router on the task label (labelled pairs only)
        "routing": "auto",  # auto (the router decides), oracle (the labelled expert) or a task name
        "memory_format": "channels_last",  # of weights and crops: channels_last or contiguous (see README)
        "freeze": {"encoder": False, "router": False, "all_but_experts": None},  # all_but_experts: task names
    },
    "val": {
        "val_freq": None,  # validate every N steps, or "epoch"; always at the end when a val set is given
        "select_best": True,  # register the checkpoint of the best val/psnr; false: the last one
        "metrics": ["psnr", "ssimc"],
        "routing": ["auto"],
    },
    "logger": {
        "print_freq": 10,  # steps between printed and logged training losses
        "save_checkpoint_freq": 500,  # steps between saves of latest.pt and the training state
        "keep_checkpoint_freq": None,  # also keep models/step_N.pt every N steps
        "experiment": None,  # MLflow experiment name
        "register_model": None,  # the MLflow model the best checkpoint becomes a version of (default: name; false: none)
        "model_alias": None,  # an alias set on that version (MLflow reserves "latest": models:/NAME/latest is built in)
    },
    "path": {
        "pretrain_network_g": None,
        # the starting checkpoint's entry holding the weights (BasicSR's option; params_ema), default: the
        # zoo entry's checkpoint.param_key, else params first
        "param_key_g": None,
        "cast_weights_g": None,  # true: convert starting weights of another dtype (float16); else refuse
        "experiments_root": "runs",
    },
}
FLOATS = [
    ("train", k)
    for k in ("lr", "weight_decay", "eta_min", "grad_clip", "fft_loss_weight", "router_loss_weight")
]
# (option, smallest value, None allowed): checked before any work, every problem of a file at once
INTEGERS = [
    ("train.total_iter", 1, False),
    ("train.warmup_iter", 0, False),
    ("datasets.train.gt_size", 8, False),
    ("datasets.train.batch_size", 1, False),
    ("datasets.train.num_worker", 0, False),
    ("datasets.train.limit", 1, True),
    ("datasets.val.batch_size", 1, False),
    ("datasets.val.num_worker", 0, False),
    ("datasets.val.limit", 1, True),
    ("logger.print_freq", 1, False),
    ("logger.save_checkpoint_freq", 1, False),
    ("logger.keep_checkpoint_freq", 1, True),
]
NOT_COMPARED_ON_RESUME = {"logger", "device", "description"}


# ----------------------------------------------------------------------------- configuration


def _merge(defaults: dict, given: dict, source: str, prefix: tuple = ()) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        where = (*prefix, key)
        if key not in defaults:
            known = ", ".join(defaults)
            raise ConfigError(f"{source}: unknown option {'.'.join(where)}; known here: {known}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: option {'.'.join(where)} must be a mapping")
            out[key] = _merge(defaults[key], value, source, where)
        else:
            out[key] = value
    return out


def resolve_config(
    doc: dict,
    overrides: list[str] | tuple[str, ...] = (),
    model: str | None = None,
    checkpoint: Path | str | None = None,
    device: str | None = None,
    source: str = "configuration",
    param_key: str | None = None,
    cast_weights: bool = False,
) -> dict:
    """The full option tree of a run: DEFAULTS, then the file, then ``--set``, then the CLI options."""
    cfg = _merge(DEFAULTS, apply_overrides(doc, overrides), source)
    if model:
        cfg["model"], cfg["network_g"] = model, None
    if checkpoint:
        cfg["path"]["pretrain_network_g"] = str(checkpoint)
    if param_key:
        cfg["path"]["param_key_g"] = param_key
    if cast_weights:
        cfg["path"]["cast_weights_g"] = True
    if device:
        cfg["device"] = device
    check = ManifestCheck(source, ConfigError)
    if cfg["path"]["param_key_g"] is not None and not isinstance(cfg["path"]["param_key_g"], str):
        check.add("path.param_key_g must name the checkpoint's entry, e.g. params_ema")
    if cfg["path"]["cast_weights_g"] not in (None, True, False):
        check.add("path.cast_weights_g must be true or false")
    if bool(cfg["model"]) == bool(cfg["network_g"]):
        check.add("name either a zoo `model` to start from or a `network_g` to train, not both")
    network = cfg["network_g"]
    if network and (not isinstance(network, dict) or network.get("type") not in ARCHITECTURE_NAMES):
        check.add(f"network_g needs a type ({', '.join(ARCHITECTURE_NAMES)}) and its keywords")
    elif network and (
        problems := network_kwargs_problems(
            network["type"], {k: v for k, v in network.items() if k != "type"}
        )
    ):
        check.add("network_g: " + "; ".join(problems))
    if not cfg["datasets"]["train"]["bench"]:
        check.add("datasets.train.bench is required (a benchmark name or folder)")
    if cfg["datasets"]["train"]["synthesize"] and (
        cfg["datasets"]["train"]["bench"] != "aio-synth" or cfg["datasets"]["train"]["split"] != "train"
    ):
        check.add(
            "datasets.train.synthesize degrades aio-synth's train photos; "
            "set datasets.train.bench: aio-synth and split: train, or synthesize: false"
        )
    t = cfg["train"]
    for problem in _number_problems(cfg):
        check.add(problem)
    if t["pixel_loss"] not in PIXEL_LOSSES:
        check.add(f"train.pixel_loss must be one of {', '.join(PIXEL_LOSSES)}")
    if t["amp"] not in ("auto", "bf16", "fp16", "none", None):
        check.add("train.amp must be auto, bf16, fp16 or none")
    if t["memory_format"] not in MEMORY_FORMATS:
        check.add(f"train.memory_format must be one of {', '.join(MEMORY_FORMATS)}")
    if t["routing"] not in MODEL_MODES:
        check.add(f"train.routing must be auto, oracle or a task: {', '.join(TASKS)}")
    for part in ("train", "val"):
        if cfg["datasets"][part]["task"] not in (None, *TASKS):
            check.add(f"datasets.{part}.task must be one of {', '.join(TASKS)}")
    experts = t["freeze"]["all_but_experts"] or []
    for task in experts if isinstance(experts, list) else [experts]:
        if task not in TASKS:
            check.add(f"train.freeze.all_but_experts: unknown task {task!r}")
    fraction = cfg["datasets"]["val"]["holdout"]
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1
    ):
        check.add(f"datasets.val.holdout must be a fraction between 0 and 1, got {fraction!r}")
    if fraction and cfg["datasets"]["val"]["bench"]:
        check.add("datasets.val: give either a bench to validate on or a holdout fraction of train, not both")
    val_freq = cfg["val"]["val_freq"]
    if not (val_freq is None or val_freq == "epoch" or (isinstance(val_freq, int) and val_freq > 0)):
        check.add("val.val_freq must be a number of steps or 'epoch'")
    check.done()
    if "psnr" not in cfg["val"]["metrics"]:
        cfg["val"]["metrics"] = ["psnr", *cfg["val"]["metrics"]]
    if not cfg["name"]:
        start = cfg["model"] or cfg["network_g"]["type"]
        cfg["name"] = f"{start}-ft-{Path(str(cfg['datasets']['train']['bench'])).name}".replace("/", "-")
    return cfg


def validation_set(cfg: dict) -> str | None:
    """What a run validates on, in words (None: no validation): a benchmark, or a held-out part of train."""
    val = cfg["datasets"]["val"]
    if val["holdout"]:
        return f"{cfg['datasets']['train']['bench']} (a held-out {val['holdout']:g} of train)"
    return str(val["bench"]) if val["bench"] else None


def _number_problems(cfg: dict) -> list[str]:
    """What is wrong with the numeric options of ``cfg`` (floats are converted in place)."""
    problems = []
    for key, minimum, optional in INTEGERS:
        *parents, leaf = key.split(".")
        value = functools.reduce(dict.__getitem__, parents, cfg)[leaf]
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            problems.append(f"{key} must be a whole number >= {minimum}, got {value!r}")
    for part, key in FLOATS:
        value = cfg[part][key]
        try:
            cfg[part][key] = number = float(0.0 if value is None else value)
        except (TypeError, ValueError):
            problems.append(f"{part}.{key} must be a number, got {value!r}")
            continue
        if not math.isfinite(number) or number < 0 or (key == "lr" and number == 0):
            problems.append(f"{part}.{key} must be {'> 0' if key == 'lr' else '>= 0'}, got {value!r}")
    betas = cfg["train"]["betas"]
    if not (
        isinstance(betas, list)
        and len(betas) == 2
        and all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        problems.append(f"train.betas must be two numbers in [0, 1), e.g. [0.9, 0.99], got {betas!r}")
    return problems


def flat_options(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "network_g":
            out.update(flat_options(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class RunOptions:
    """How a finetuning runs, beside what it trains (the option tree): folders, resume, tracking."""

    run_dir: Path | None = None  # default: path.experiments_root / name
    resume: bool = False  # insist on resuming (a run folder with a training state resumes anyway)
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str | None = None
    zoo_dir: Path | None = None  # where the best checkpoint is registered (default $DEMOE_HOME/zoo)
    zoo_dirs: list[Path] = field(default_factory=list)  # extra zoo folders to find the starting model in
    data_root: Path | None = None
    bench_dirs: list[Path] = field(default_factory=list)
    stop_after: int | None = None  # leave after this many steps of this invocation (time-limited jobs)
    replace_entry: bool = False  # replace a zoo entry of the same name made by another run (else it is kept)

    def run_folder(self, cfg: dict) -> Path:
        return Path(self.run_dir or Path(cfg["path"]["experiments_root"]) / cfg["name"])
