"""The network a finetuning trains: where it starts (a zoo model's weights, a checkpoint, or scratch),
what is frozen, how it is wrapped for DDP, and its optimiser, schedule and mixed precision."""

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from demoe.finetune.options import TrainError
from demoe.net import has_router
from demoe.net.training import MEMORY_FORMATS, leaves_experts_unused
from demoe.registry import build, zoo
from demoe.registry.checkpoints import load_checkpoint
from demoe.runtime import Dist
from demoe.vocab import AUTO, TASK_INDEX


@dataclass
class StartModel:
    model: nn.Module
    arch: str
    kwargs: dict
    weights: Path | None  # the weights it started from, None from scratch
    entry: zoo.ZooEntry | None  # the zoo model it started from, None for network_g


def start_model(cfg: dict, zoo_dirs: list[Path]) -> StartModel:
    """The starting network (``model`` from the zoo or ``network_g``), its weights loaded when asked."""
    entry = None
    if cfg["network_g"]:
        kwargs = dict(cfg["network_g"])
        arch = kwargs.pop("type")
    else:
        entry = zoo.get_entry(cfg["model"], zoo.load_zoo(zoo.zoo_dirs(zoo_dirs)))
        arch, kwargs = entry.arch, dict(entry.kwargs)
    if cfg["k"] is not None:
        kwargs["k_used"] = int(cfg["k"])
    try:
        model = build.build_network(arch, kwargs)
    except zoo.ZooError as e:
        raise TrainError(str(e)) from None
    weights = cfg["path"]["pretrain_network_g"]
    own = weights is None
    if weights is None and cfg["pretrained"] and entry is not None:
        if entry.checkpoint is None:
            raise TrainError(
                f"model {entry.name!r} has no checkpoint to start from; set `pretrained: false` to train it "
                "from scratch, or pass --checkpoint PATH"
            )
        weights = zoo.resolve_checkpoint(entry)
    if weights is not None:
        param_key, cast = cfg["path"]["param_key_g"], bool(cfg["path"]["cast_weights_g"])
        if entry is not None:
            param_key, cast = zoo.weights_options(entry, own, param_key, cast)
        load_checkpoint(model, Path(weights), param_key, cast)
    return StartModel(model, arch, kwargs, Path(weights) if weights else None, entry)


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


def place(model: nn.Module, routing: str, memory_format: str, device: torch.device, dist_info: Dist):
    """``model`` on ``device`` in ``memory_format``, and the module to call for training (DDP's wrapper
    in a process group); returns (model, module to call, trainable parameters)."""
    if not has_router(model) and routing != AUTO:
        raise TrainError(f"train.routing {routing}: this model has no router or experts; use auto")
    model.to(device, memory_format=MEMORY_FORMATS[memory_format])
    if dist_info.world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainError("train.freeze leaves no parameter to train")
    if dist_info.world == 1:
        return model, model, trainable
    from torch.nn.parallel import DistributedDataParallel

    # In channels-last, the gradient of a 1x1 kernel can come back with the other strides of the same
    # memory (size-1 axes); DDP then copies it into its bucket, a few kB, and warns on every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    net = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=leaves_experts_unused(model, routing),
    )
    return model, net, trainable


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine from 1 down to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wanted_amp(setting: str | None, device: torch.device) -> torch.dtype | None:
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(setting or "none")


def optimisation(train: dict, trainable: list, device: torch.device):
    """AdamW, its warmup-then-cosine schedule and the gradient scaler (fp16 only); returns
    (optimizer, scheduler, scaler, autocast dtype or None)."""
    total = int(train["total_iter"])
    optimizer = torch.optim.AdamW(
        trainable,
        lr=float(train["lr"]),
        betas=tuple(train["betas"]),
        weight_decay=float(train["weight_decay"]),
    )
    floor = float(train["eta_min"]) / float(train["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, int(train["warmup_iter"]), floor)
    )
    amp_dtype = wanted_amp(train["amp"], device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return optimizer, scheduler, scaler, amp_dtype
