"""The one model factory: a zoo entry (or an architecture and its keywords) -> a network with its
weights loaded; and what a network costs (parameters, FLOPs)."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from demoe.fileio import atomic_write
from demoe.net import ARCHITECTURES
from demoe.registry.checkpoints import CheckpointError, LoadedWeights, load_checkpoint, save_checkpoint
from demoe.registry.zoo import (
    ZooEntry,
    ZooError,
    get_entry,
    known_stats,
    resolve_checkpoint,
    stats_cache_file,
    stats_cache_key,
    weights_options,
)

EXPORT_FORMATS = ("published",)


def build_network(arch: str, kwargs: dict, k: int | None = None) -> torch.nn.Module:
    """``arch`` built with ``kwargs`` (``k`` experts per MoE block instead of its ``k_used``)."""
    if arch not in ARCHITECTURES:
        raise ZooError(f"architecture {arch!r} is unknown; known: {', '.join(ARCHITECTURES)}")
    kwargs = dict(kwargs)
    if k is not None:
        if "k_used" not in kwargs:
            raise ZooError(f"{arch} has no experts, so k cannot be set")
        kwargs["k_used"] = int(k)
    try:
        return ARCHITECTURES[arch](**kwargs)
    except (TypeError, ValueError) as e:
        raise ZooError(f"cannot build {arch} with {kwargs}: {e}") from None


def build_model(entry: ZooEntry, k: int | None = None) -> torch.nn.Module:
    if k is not None and "k_used" not in entry.kwargs:
        raise ZooError(f"model {entry.name!r} has no experts, so k cannot be set")
    return build_network(entry.arch, entry.kwargs, k)


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode
    entry: ZooEntry
    checkpoint: Path | None  # None when built without weights
    weights: LoadedWeights | None  # which entry of the file was loaded, what was cast


def load_model(
    name: str,
    checkpoint: Path | str | None = None,
    k: int | None = None,
    pretrained: bool = True,
    zoo: dict[str, ZooEntry] | None = None,
    param_key: str | None = None,
    cast_weights: bool = False,
) -> LoadedModel:
    """Build the zoo model ``name`` and load its weights (``checkpoint``, else the entry's own file, with
    the entry's ``param_key``/``cast_weights`` unless these are given)."""
    entry = get_entry(name, zoo)
    model = build_model(entry, k)
    path = weights = None
    if pretrained or checkpoint is not None:
        path = resolve_checkpoint(entry, checkpoint)
        key, cast = weights_options(entry, checkpoint is None, param_key, cast_weights)
        weights = load_checkpoint(model, path, key, cast)
    return LoadedModel(model.eval(), entry, path, weights)


def create_model(
    name: str,
    checkpoint: Path | str | None = None,
    k: int | None = None,
    pretrained: bool = True,
    zoo: dict[str, ZooEntry] | None = None,
    param_key: str | None = None,
    cast_weights: bool = False,
):
    """Build the zoo model ``name`` and load its weights; returns (model in eval mode, entry, checkpoint path)."""
    loaded = load_model(name, checkpoint, k, pretrained, zoo, param_key, cast_weights)
    return loaded.model, loaded.entry, loaded.checkpoint


def export_weights(
    name: str,
    out: Path,
    fmt: str = "published",
    checkpoint: Path | str | None = None,
    zoo: dict[str, ZooEntry] | None = None,
    param_key: str | None = None,
    cast_weights: bool = False,
) -> LoadedModel:
    """Write the weights of zoo model ``name`` as ``fmt``: ``published`` is ``{'params': state_dict}`` of
    plain tensors in the model's dtype, written with ``torch.save`` (atomically), which the original
    inference.py and finetune.py load strictly."""
    if fmt not in EXPORT_FORMATS:
        raise ZooError(f"--format {fmt}: unknown; known: {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.suffix == ".safetensors":
        raise CheckpointError(f"{out}: the published layout is a torch.save file; name it .pt or .pth")
    if out.is_dir():
        raise CheckpointError(f"{out}: is a folder; name the file to write, e.g. {out / (name + '.pt')}")
    loaded = load_model(name, checkpoint, zoo=zoo, param_key=param_key, cast_weights=cast_weights)
    if out.exists() and out.resolve() == loaded.checkpoint.resolve():
        raise CheckpointError(f"{out}: is the checkpoint being exported; write the export to another file")
    save_checkpoint(out, loaded.model.state_dict())
    return loaded


def count_flops(model: torch.nn.Module, side: int) -> int:
    """FLOPs of one forward of a ``side``x``side`` image (torch's FlopCounterMode, 2 per MAC).

    On the model's padding grid every layer's count is either per pixel or fixed (the router's MLP),
    so the count is ``a * side**2 + c``: two forwards at 2x and 4x the padding size give ``a`` and
    ``c`` exactly, at a twelfth of the cost of one forward at 256x256 for the published model.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def measured(s: int) -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, model.intro.in_channels, s, s))
        return int(counter.get_total_flops())

    align = getattr(model, "padder_size", 1)
    small, large = 2 * align, 4 * align
    if side % align or side <= large:
        return measured(side)
    f_small, f_large = measured(small), measured(large)
    per_pixel, rest = divmod(f_large - f_small, large**2 - small**2)
    if rest:
        return measured(side)
    return f_small + per_pixel * (side**2 - small**2)


def model_stats(entry: ZooEntry, side: int = 256) -> dict:
    """Parameters and GFLOPs of one forward at ``side``x``side`` (``count_flops``): ``known_stats`` where
    it has them (``tests/registry/test_zoo.py`` recounts the shipped ones), else counted once and cached."""
    found = known_stats(entry, side)
    if found is not None:
        return found
    cache_file = stats_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    model = build_model(entry).eval()
    stats = {"params": sum(p.numel() for p in model.parameters()), "gflops": count_flops(model, side) / 1e9}
    cache[stats_cache_key(entry, side)] = stats
    atomic_write(cache_file, lambda tmp: tmp.write_text(json.dumps(cache, indent=1)))
    return stats
