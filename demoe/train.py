"""Finetuning: the training loop of ``demoe-eval finetune``, readable top to bottom.

The options are a BasicSR-like YAML (``DEFAULTS`` below lists every one). One process needs no
process group; under torchrun each rank trains on its share of every global batch (a
DistributedSampler over the same seeded permutation) and rank 0 validates, checkpoints and logs.

Exact resume: the order of the data depends only on (seed, epoch), the crops and flips only on
(seed, epoch, index), and the training state holds the optimizer, scheduler, scaler, step and every
random generator of every rank. A resumed run starts the epoch part-way, skipping the batches
already trained on, so on a CPU it ends with the same parameters, bit for bit, as a run never stopped.
"""

import copy
import itertools
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

from demoe.config import ConfigError, apply_overrides, dump_config
from demoe.errors import DemoeError
from demoe.fileio import atomic_write, atomic_write_text, sha256_file
from demoe.net import ARCHITECTURES, has_router
from demoe.net.losses import PIXEL_LOSSES, fft_loss, pixel_loss, router_ce
from demoe.paths import demoe_home
from demoe.registry import zoo
from demoe.registry.checkpoints import extract_state_dict, load_weights, read_checkpoint, save_checkpoint
from demoe.runner.scoring import collate_pairs, validate
from demoe.runtime import init_distributed, resolve_device
from demoe.tracking.mlflow_runs import FinetuneTracker, end_active_run
from demoe.vocab import MODEL_MODES, TASK_INDEX, TASKS

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
        "val": {"bench": None, "split": None, "task": None, "limit": None, "batch_size": 1, "num_worker": 0},
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
        "register_model": None,  # also register the best checkpoint as this MLflow model
        "model_alias": "latest",
    },
    "path": {"pretrain_network_g": None, "experiments_root": "runs"},
}
FLOATS = [
    ("train", k)
    for k in ("lr", "weight_decay", "eta_min", "grad_clip", "fft_loss_weight", "router_loss_weight")
]
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
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
) -> dict:
    """The full option tree of a run: DEFAULTS, then the file, then ``--set``, then the CLI options."""
    cfg = _merge(DEFAULTS, apply_overrides(doc, overrides), source)
    if model:
        cfg["model"], cfg["network_g"] = model, None
    if checkpoint:
        cfg["path"]["pretrain_network_g"] = str(checkpoint)
    if device:
        cfg["device"] = device
    if bool(cfg["model"]) == bool(cfg["network_g"]):
        raise ConfigError(
            f"{source}: name either a zoo `model` to start from or a `network_g` to train, not both"
        )
    if cfg["network_g"] and (not isinstance(cfg["network_g"], dict) or "type" not in cfg["network_g"]):
        raise ConfigError(f"{source}: network_g needs a type ({', '.join(ARCHITECTURES)}) and its keywords")
    if not cfg["datasets"]["train"]["bench"]:
        raise ConfigError(f"{source}: datasets.train.bench is required (a benchmark name or folder)")
    if cfg["datasets"]["train"]["synthesize"] and (
        cfg["datasets"]["train"]["bench"] != "aio-synth" or cfg["datasets"]["train"]["split"] != "train"
    ):
        raise ConfigError(
            f"{source}: datasets.train.synthesize degrades aio-synth's train photos; "
            "set datasets.train.bench: aio-synth and split: train, or synthesize: false"
        )
    t = cfg["train"]
    for part, key in FLOATS:
        try:
            cfg[part][key] = float(cfg[part][key] or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {part}.{key} must be a number, got {cfg[part][key]!r}") from None
    if t["pixel_loss"] not in PIXEL_LOSSES:
        raise ConfigError(f"{source}: train.pixel_loss must be one of {', '.join(PIXEL_LOSSES)}")
    if t["amp"] not in ("auto", "bf16", "fp16", "none", None):
        raise ConfigError(f"{source}: train.amp must be auto, bf16, fp16 or none")
    if t["memory_format"] not in MEMORY_FORMATS:
        raise ConfigError(f"{source}: train.memory_format must be one of {', '.join(MEMORY_FORMATS)}")
    if t["routing"] not in MODEL_MODES:
        raise ConfigError(f"{source}: train.routing must be auto, oracle or a task: {', '.join(TASKS)}")
    for part in ("train", "val"):
        if cfg["datasets"][part]["task"] not in (None, *TASKS):
            raise ConfigError(f"{source}: datasets.{part}.task must be one of {', '.join(TASKS)}")
    for task in t["freeze"]["all_but_experts"] or []:
        if task not in TASKS:
            raise ConfigError(f"{source}: train.freeze.all_but_experts: unknown task {task!r}")
    val_freq = cfg["val"]["val_freq"]
    if not (val_freq is None or val_freq == "epoch" or (isinstance(val_freq, int) and val_freq > 0)):
        raise ConfigError(f"{source}: val.val_freq must be a number of steps or 'epoch'")
    if "psnr" not in cfg["val"]["metrics"]:
        cfg["val"]["metrics"] = ["psnr", *cfg["val"]["metrics"]]
    if not cfg["name"]:
        start = cfg["model"] or cfg["network_g"]["type"]
        cfg["name"] = f"{start}-ft-{Path(str(cfg['datasets']['train']['bench'])).name}".replace("/", "-")
    return cfg


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "network_g":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------- model, data, schedule


def build_start_model(cfg: dict, zoo_dirs: list[Path]) -> tuple[nn.Module, str, dict, Path | None]:
    """The starting network, with its weights loaded when asked; returns (model, arch, kwargs, weights)."""
    entry = None
    if cfg["network_g"]:
        kwargs = dict(cfg["network_g"])
        arch = kwargs.pop("type")
        if arch not in ARCHITECTURES:
            raise TrainError(f"network_g.type {arch!r} is unknown; known: {', '.join(ARCHITECTURES)}")
    else:
        entry = zoo.get_entry(cfg["model"], zoo.load_zoo(zoo.zoo_dirs(zoo_dirs)))
        arch, kwargs = entry.arch, dict(entry.kwargs)
    if cfg["k"] is not None:
        kwargs["k_used"] = int(cfg["k"])
    try:
        model = ARCHITECTURES[arch](**kwargs)
    except (TypeError, ValueError) as e:
        raise TrainError(f"cannot build {arch} with {kwargs}: {e}") from None
    weights = cfg["path"]["pretrain_network_g"]
    if weights is None and cfg["pretrained"] and entry is not None:
        if entry.checkpoint is None:
            raise TrainError(
                f"model {entry.name!r} has no checkpoint to start from; set `pretrained: false` to train it "
                "from scratch, or pass --checkpoint PATH"
            )
        weights = zoo.resolve_checkpoint(entry)
    if weights is not None:
        load_weights(model, Path(weights))
    return model, arch, kwargs, Path(weights) if weights else None


def apply_freeze(model: nn.Module, freeze: dict) -> list[str]:
    """Turn off gradients of the frozen parts; returns their names for the log."""
    if not has_router(model) and (freeze["router"] or freeze["all_but_experts"]):
        raise TrainError("train.freeze: this model has no router or experts; only freeze.encoder applies")
    frozen = []
    if freeze["all_but_experts"]:
        keep = {TASK_INDEX[t] for t in freeze["all_but_experts"]}
        for name, p in model.named_parameters():
            parts = name.split(".")
            p.requires_grad = parts[0] == "experts" and parts[2] == "experts" and int(parts[3]) in keep
        frozen.append(f"all but experts {', '.join(freeze['all_but_experts'])}")
    if freeze["encoder"]:
        for module in (model.intro, model.encoders, model.downs):
            module.requires_grad_(False)
        frozen.append("encoder")
    if freeze["router"] or freeze["all_but_experts"]:
        model.mlp_branch.requires_grad_(False)
        frozen.append("router")
    return frozen


def leaves_experts_unused(model: nn.Module, routing: str) -> bool:
    """Whether a training step can leave parameters without gradient (DDP then has to look for them):
    top-k routing with k below the number of experts, or a forced expert."""
    if not has_router(model):
        return False
    return routing != "auto" or model.k_used < model.num_experts


def set_train_mode(model: nn.Module) -> None:
    """Training mode, except a frozen router, whose BatchNorm statistics and dropout stay fixed."""
    model.train()
    router = getattr(model, "mlp_branch", None)
    if router is not None and not any(p.requires_grad for p in router.parameters()):
        router.eval()


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine from 1 down to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EpochSampler(torch.utils.data.DistributedSampler):
    """The DistributedSampler's seeded per-epoch order, which can start part-way through an epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def load_pairs(part: dict, data_root: Path | None, bench_dirs: list[Path]) -> tuple[list, object]:
    from demoe.data.pairs import resolve

    bench = resolve(str(part["bench"]), split=part["split"], data_root=data_root, bench_dirs=bench_dirs)
    pairs = list(bench.pairs)[: part["limit"]] if part["limit"] else list(bench.pairs)
    if part["task"]:
        pairs = [replace(p, label=part["task"]) for p in pairs]
    if not pairs:
        raise TrainError(f"benchmark {part['bench']} ({bench.split}) has no image pairs under {bench.root}")
    return pairs, bench


def wanted_amp(setting: str | None, device: torch.device) -> torch.dtype | None:
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(setting or "none")


# ----------------------------------------------------------------------------- random state, checkpoints


def rng_state(loader_gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "loader": loader_gen.get_state(),
    }


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader_gen.set_state(state["loader"])


def save_training_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainError(
            f"{path}: the training state cannot be read ({type(e).__name__}); delete it to restart"
        ) from None


def _keep_steps(path: Path, step: int) -> None:
    """Drop the log lines written after ``step`` (those of steps a resumed run trains again)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- MLflow and the zoo


def weights_licence(start: zoo.ZooEntry | None, pretrained_from: Path | None) -> str:
    """What the licence of trained weights follows from: the weights they started from, if any."""
    if pretrained_from is None:
        return "the trainer's own: trained from scratch with demoe-eval (mind the training data's licence)"
    if start is not None and start.licence:
        return f"derived from {start.name}'s weights: {start.licence}"
    return f"derived from {pretrained_from.name}: the licence of those weights"


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


# ----------------------------------------------------------------------------- the loop


@dataclass
class RunOptions:
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


def finetune(cfg: dict, opts: RunOptions) -> dict:
    """Train as ``cfg`` says; returns a summary (rank 0: step, best_psnr, checkpoints, zoo entry, run id).
    A run that stops on an error is marked FAILED in MLflow (KILLED on Ctrl-C), not left to look finished."""
    try:
        return _finetune(cfg, opts)
    except BaseException as e:
        end_active_run("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def _finetune(cfg: dict, opts: RunOptions) -> dict:
    from demoe.data.dataset import PairedImageDataset, SynthesizedPairs

    t, dsets = cfg["train"], cfg["datasets"]
    seed = int(cfg["manual_seed"])
    dist_info = init_distributed(
        cfg["device"] if cfg["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = resolve_device(cfg["device"], dist_info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    main_rank, world = dist_info.is_main, dist_info.world
    run_dir = Path(opts.run_dir or Path(cfg["path"]["experiments_root"]) / cfg["name"])
    state_path = run_dir / STATE_FILE

    # ---- resume or start: the run folder decides
    state = load_training_state(state_path) if state_path.exists() else None
    if opts.resume and state is None:
        raise TrainError(f"--resume: {run_dir} holds no {STATE_FILE}; drop --resume to start a new run there")
    if state is not None:
        saved = {
            k: v
            for k, v in _flat(yaml.safe_load(state["config"])).items()
            if k.split(".")[0] not in NOT_COMPARED_ON_RESUME
        }
        now = {k: v for k, v in _flat(cfg).items() if k.split(".")[0] not in NOT_COMPARED_ON_RESUME}
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            raise TrainError(
                f"{run_dir}: holds a run with other settings ({', '.join(changed[:5])}); resume with the same "
                "configuration, or use another --out / delete that folder to start again"
            )

    # ---- the model, identical on every rank
    torch.manual_seed(seed)
    model, arch, kwargs, start_weights = build_start_model(cfg, opts.zoo_dirs)
    frozen = apply_freeze(model, t["freeze"])
    routed = has_router(model)
    if not routed and t["routing"] != "auto":
        raise TrainError(f"train.routing {t['routing']}: this model has no router or experts; use auto")
    if state is not None:
        model.load_state_dict(state["params"])
    memory_format = MEMORY_FORMATS[t["memory_format"]]
    model.to(device, memory_format=memory_format)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainError("train.freeze leaves no parameter to train")
    find_unused = leaves_experts_unused(model, t["routing"])
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # In channels-last, the gradient of a 1x1 kernel can come back with the other strides of the same
        # memory (size-1 axes); DDP then copies it into its bucket, a few kB, and warns on every step.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )

    # ---- data: every rank sees its share of each global batch; crops depend on (seed, epoch, index)
    batch = int(dsets["train"]["batch_size"])
    if batch % world:
        raise TrainError(f"datasets.train.batch_size {batch} does not split over {world} processes")
    train_pairs, train_bench = load_pairs(dsets["train"], opts.data_root, opts.bench_dirs)
    if t["routing"] == "oracle" and any(p.label is None for p in train_pairs):
        raise TrainError(
            "train.routing oracle needs task labels; set datasets.train.task for an unlabelled benchmark"
        )
    crop = int(dsets["train"]["gt_size"])
    augment = bool(dsets["train"]["augment"])
    if dsets["train"]["synthesize"]:
        from demoe.data.aio_synth import train_photos

        train_set = SynthesizedPairs(
            train_photos(), crop=crop, length=len(train_pairs), augment=augment, seed=seed
        )
    else:
        train_set = PairedImageDataset(train_pairs, crop=crop, augment=augment, seed=seed)
    sampler = EpochSampler(train_set, num_replicas=world, rank=dist_info.rank, seed=seed)
    loader_gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch // world,
        sampler=sampler,
        num_workers=int(dsets["train"]["num_worker"]),
        collate_fn=collate_pairs,
        drop_last=True,
        generator=loader_gen,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = sampler.num_samples // (batch // world)
    if steps_per_epoch == 0:
        raise TrainError(f"datasets.train: {len(train_pairs)} pairs are fewer than one batch of {batch}")

    val_loader = metrics = None
    if dsets["val"]["bench"] and main_rank:
        from demoe.metrics.scorers import MetricSet, Protocol

        val_pairs, val_bench = load_pairs(dsets["val"], opts.data_root, opts.bench_dirs)
        val_loader = torch.utils.data.DataLoader(
            PairedImageDataset(val_pairs),
            batch_size=int(dsets["val"]["batch_size"]),
            num_workers=int(dsets["val"]["num_worker"]),
            collate_fn=collate_pairs,
            generator=torch.Generator().manual_seed(seed),
        )
        protocol = Protocol(
            **{
                k: v
                for k, v in val_bench.spec.protocol.items()
                if k in ("color", "crop_border", "quantize_8bit")
            }
        )
        metrics = MetricSet(cfg["val"]["metrics"], device=device, protocol=protocol)
        for name, reason in metrics.unavailable.items():
            print(f"note: validation metric {name} is not computed: {reason}", flush=True)
    has_val = bool(dsets["val"]["bench"])

    # ---- optimizer, schedule, mixed precision
    total = int(t["total_iter"])
    optimizer = torch.optim.AdamW(
        trainable, lr=float(t["lr"]), betas=tuple(t["betas"]), weight_decay=float(t["weight_decay"])
    )
    floor = float(t["eta_min"]) / float(t["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, int(t["warmup_iter"]), floor)
    )
    amp_dtype = wanted_amp(t["amp"], device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    step, best_psnr, best_step, run_id = 0, None, None, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, best_psnr, best_step, run_id = (
            state["step"],
            state["best_psnr"],
            state["best_step"],
            state["run_id"],
        )
        if state["world_size"] == world:
            set_rng_state(state["rng"][dist_info.rank], loader_gen)
        elif main_rank:
            print(
                f"note: resuming {state['world_size']} processes' run with {world}: not bit-exact", flush=True
            )
    else:
        random.seed(seed + dist_info.rank)
        np.random.seed(seed + dist_info.rank)
        torch.manual_seed(seed + dist_info.rank)

    # ---- the run folder and MLflow (rank 0)
    tracker = FinetuneTracker(
        opts.tracking and main_rank, opts.tracking_uri, opts.experiment or cfg["logger"]["experiment"]
    )
    log_file, val_file = run_dir / "train_log.jsonl", run_dir / "validation.jsonl"
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        for path in (log_file, val_file):
            _keep_steps(path, step) if state is not None else path.unlink(missing_ok=True)
        tags = {
            "demoe.kind": "finetune",
            "demoe.model": cfg["name"],
            "demoe.start": cfg["model"] or arch,
            "demoe.train_bench": f"{train_bench.spec.name}/{train_bench.split}",
            "demoe.run_dir": str(run_dir.resolve()),
            "demoe.world_size": str(world),
        }
        run_id = tracker.start(run_id, cfg["name"], tags, cfg, dump_config(cfg))
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{'resuming' if state else 'starting'} {cfg['name']} at step {step}/{total}: {arch} "
            f"({params / 1e6:.2f}M parameters, {sum(p.numel() for p in trainable) / 1e6:.2f}M trained"
            f"{', frozen: ' + ', '.join(frozen) if frozen else ''}), {len(train_pairs)} training pairs, "
            f"{steps_per_epoch} steps/epoch, {world} process(es) on {device}"
            + (f", from {start_weights}" if start_weights and not state else ""),
            flush=True,
        )

    def save_weights(kind: str) -> None:
        """A checkpoint in the published layout (rank 0)."""
        meta = {"epoch": step // steps_per_epoch, "step": step, "best_psnr": best_psnr, "name": cfg["name"]}
        save_checkpoint(run_dir / "models" / f"{kind}.pt", model, **meta, arch=arch, kwargs=kwargs)

    def save_state() -> None:
        """latest.pt and the training state; every rank hands in its random generators."""
        rngs = [rng_state(loader_gen)]
        if world > 1:
            import torch.distributed as dist

            rngs = [None] * world
            dist.all_gather_object(rngs, rng_state(loader_gen))
        if main_rank:
            save_weights("latest")
            training_state = {
                "params": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rngs,
                "step": step,
                "epoch": step // steps_per_epoch,
                "batch_in_epoch": step % steps_per_epoch,
                "best_psnr": best_psnr,
                "best_step": best_step,
                "run_id": run_id,
                "world_size": world,
                "config": dump_config(cfg),
            }
            save_training_state(state_path, training_state)

    identity_done = False

    def run_validation() -> None:
        nonlocal best_psnr, best_step, identity_done
        if main_rank:
            modes = [*([] if identity_done else ["identity"]), *cfg["val"]["routing"]]
            summary = validate(model, val_loader, metrics, modes, device)
            summary_json = {mode: s.to_json() for mode, s in summary.items()}
            set_train_mode(model)
            identity_done = True
            figures = {}
            for i, mode in enumerate(cfg["val"]["routing"]):
                prefix = "val/" if i == 0 else f"val/{mode}/"
                figures |= {f"{prefix}{m}": v for m, v in summary[mode].metrics.items()}
                if summary[mode].routing_accuracy is not None:
                    figures[f"{prefix}routing_accuracy"] = summary[mode].routing_accuracy
            if "identity" in summary:
                figures |= {f"val/identity/{m}": v for m, v in summary["identity"].metrics.items()}
            usage = summary[cfg["val"]["routing"][0]].expert_usage
            if usage:
                first_block = [sum(counts[0][e] for counts in usage.values()) for e in range(len(TASKS))]
                figures |= {
                    f"val/expert_usage/{task}": n / max(1, sum(first_block))
                    for task, n in zip(TASKS, first_block, strict=True)
                }
            psnr = figures["val/psnr"]
            if not cfg["val"]["select_best"] or best_psnr is None or psnr > best_psnr:
                best_psnr, best_step = psnr, step
                save_weights("best")
            _append_jsonl(
                val_file,
                {"step": step, "epoch": step // steps_per_epoch, "figures": figures, "summary": summary_json},
            )
            tracker.metrics(figures, step)
            tracker.json(summary_json, f"validation/step_{step:07d}.json")
            shown = "  ".join(f"{k[4:]} {v:.4f}" for k, v in figures.items() if "/" not in k[4:])
            print(
                f"validation at step {step}: {shown}"
                + (f"  (best psnr {best_psnr:.2f} at step {best_step})" if cfg["val"]["select_best"] else ""),
                flush=True,
            )
        if world > 1:
            import torch.distributed as dist

            dist.barrier()

    # ---- training
    val_freq = cfg["val"]["val_freq"]
    print_freq, save_freq = int(cfg["logger"]["print_freq"]), int(cfg["logger"]["save_checkpoint_freq"])
    keep_freq = int(cfg["logger"]["keep_checkpoint_freq"] or 0)
    started_at, since, count = step, time.perf_counter(), 0
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    set_train_mode(model)
    while step < total and (opts.stop_after is None or step - started_at < opts.stop_after):
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        sampler.start = skip * (batch // world)
        train_set.set_epoch(epoch)
        for blurred, sharp, _names, labels in loader:
            blurred = blurred.to(device, memory_format=memory_format)
            sharp, labels = sharp.to(device, memory_format=memory_format), labels.to(device)
            lr = optimizer.param_groups[0]["lr"]
            task = labels if t["routing"] == "oracle" else t["routing"]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = net(blurred, task=task)
            restored = out["output"].float()
            pix = pixel_loss(restored, sharp, t["pixel_loss"])
            freq = fft_loss(restored, sharp) if t["fft_loss_weight"] else torch.zeros((), device=device)
            ce = router_ce(out["router_logits"], labels) if routed else torch.zeros((), device=device)
            loss = pix + float(t["fft_loss_weight"]) * freq + float(t["router_loss_weight"]) * ce
            if not loss.requires_grad:
                # no sample of this batch went through a trained part (only named experts train and
                # none was chosen): a step with zero gradients, which every DDP rank has to take too
                loss = loss + sum(p.sum() for p in trainable) * 0.0
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t["grad_clip"]:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(trainable, float(t["grad_clip"]))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            sums += torch.stack([loss, pix, freq, ce]).detach().to(torch.float64)
            count += 1

            if step % print_freq == 0 or step == total:
                n, count = count, 0
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(sums)
                    sums /= world
                mean = (sums / n).tolist()
                seconds = (time.perf_counter() - since) / n
                if main_rank:
                    record = {"step": step, "epoch": epoch, "loss": mean[0], "pixel": mean[1], "fft": mean[2]}
                    record |= {"router_ce": mean[3], "lr": lr, "seconds_per_step": seconds}
                    _append_jsonl(log_file, record)
                    tracker.metrics(
                        {
                            "train/loss": mean[0],
                            f"train/{t['pixel_loss']}": mean[1],
                            "train/router_ce": mean[3],
                            "lr": lr,
                        }
                        | ({"train/fft": mean[2]} if t["fft_loss_weight"] else {}),
                        step,
                    )
                    print(
                        f"step {step}/{total}  epoch {epoch}  loss {mean[0]:.5f}  {t['pixel_loss']} {mean[1]:.5f}  "
                        f"router_ce {mean[3]:.4f}  lr {lr:.2e}  {seconds:.3f} s/step",
                        flush=True,
                    )
                sums.zero_()
                since = time.perf_counter()
            val_due = has_val and (
                step == total
                or (val_freq == "epoch" and step % steps_per_epoch == 0)
                or (isinstance(val_freq, int) and step % val_freq == 0)
            )
            if val_due:
                run_validation()
            if step % save_freq == 0 or step == total:
                save_state()
            if main_rank and keep_freq and step % keep_freq == 0:
                save_weights(f"step_{step:07d}")
            if step >= total or (opts.stop_after is not None and step - started_at >= opts.stop_after):
                break

    # ---- the end: a final save, the best checkpoint into the zoo and MLflow
    if step - started_at and step % save_freq and step != total:
        save_state()
    result = {
        "step": step,
        "total_iter": total,
        "run_dir": str(run_dir),
        "best_psnr": best_psnr,
        "run_id": run_id,
    }
    if step >= total and main_rank:
        if not has_val or not (run_dir / "models" / "best.pt").exists():
            save_weights("best")
        best = run_dir / "models" / "best.pt"
        last_val = None
        if val_file.exists():
            lines = val_file.read_text().splitlines()
            by_step = {json.loads(ln)["step"]: json.loads(ln)["figures"] for ln in lines if ln.strip()}
            last_val = by_step.get(best_step)
        info = {
            "run_id": run_id,
            "run_dir": str(run_dir),
            "step": best_step if has_val else step,
            "trained_on": f"{train_bench.spec.name}/{train_bench.split}",
            "started_from": cfg["model"] or "scratch",
        }
        if last_val:
            info["validation"] = {
                "bench": str(dsets["val"]["bench"]),
                **{k: round(float(v), 4) for k, v in last_val.items()},
            }
        zoo_dir = Path(opts.zoo_dir or demoe_home() / "zoo")
        description = cfg["description"] or f"{arch} trained with demoe-eval finetune ({cfg['name']})."
        start = (
            zoo.get_entry(cfg["model"], zoo.load_zoo(zoo.zoo_dirs(opts.zoo_dirs))) if cfg["model"] else None
        )
        licence = weights_licence(start, start_weights)
        entry = register_zoo_entry(zoo_dir, cfg["name"], arch, kwargs, best, description, info, licence)
        result |= {"best": str(best), "zoo_entry": str(entry)}
        print(f"finished: best {best} registered as zoo model {cfg['name']!r} in {entry}", flush=True)
        tracker.artifact(best, "best")
        tracker.artifact(entry, "zoo")
        if cfg["logger"]["register_model"]:
            version = tracker.register(cfg["logger"]["register_model"], cfg["logger"]["model_alias"], "best")
            result["mlflow_model_version"] = version
    if main_rank:
        tracker.end("FINISHED" if step >= total else "KILLED")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return result
