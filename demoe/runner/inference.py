"""The inference path of the evaluator: a model prepared for speed, and ``restore``, which runs a batch
whole or in overlapping tiles and returns the keys of the model's own forward.

Speed: channels-last memory format end to end (the NAFBlocks' LayerNorm and 1x1 convs then run as
single passes over the innermost channel axis), inference mode, opt-in bf16 autocast, and a heap that
keeps freed memory (``keep_freed_memory``), so that a forward does not page-fault fresh memory for
each of its large feature maps (why the published forward costs 8x, not 4x, at twice the side).
``torch.compile`` is opt-in (``use_compile``).

Tiles: the routing decision is made once per image, from the whole image shrunk to ``routing_side``
px, and forced on every tile through ``routing_weights``. The simplified channel attention (SCA) of
each NAFBlock averages its features over the whole image; a tile alone would average over itself
only. So every tile is given the whole image's averages: the shrunk pass records them, and with
``attention="two-pass"`` (the default) a first pass over the tiles, using those, measures them at
full resolution (each tile adding its share), and the second pass restores with the measured ones.
Tiles sit on the grid of the network's downsampling (multiples of ``model.padder_size``), so their
features line up with the whole image's, and are blended with linear ramps over their overlap.
"""

import ctypes
import platform
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from demoe.errors import DemoeError
from demoe.net import has_router
from demoe.net.blocks import NAFBlock, pad_to_multiple

PRECISIONS = ("fp32", "bf16", "fp16")
ATTENTION_MODES = ("two-pass", "one-pass")
COMPILE_MODES = ("auto", "on", "off")
ROUTING_SIDE = 1024

Pooled = dict[str, torch.Tensor]


class InferenceError(DemoeError):
    pass


_compiled: "weakref.WeakKeyDictionary[nn.Module, Callable]" = weakref.WeakKeyDictionary()
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Serve large tensors from the process heap and keep freed memory there (glibc only).

    By default glibc maps every allocation above 32 MiB afresh and unmaps it when freed, so each of a
    forward's large feature maps is page-faulted and zeroed by the kernel on every call. Afterwards
    the heap keeps them for reuse (the process keeps its peak memory). Returns whether it applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def prepare(
    model: nn.Module, device: torch.device | str | None = None, compile_mode: str = "off"
) -> nn.Module:
    """Make ``model`` ready for ``restore`` (in place): eval mode, channels-last, ``keep_freed_memory``,
    and, when ``compile_mode`` resolves to on (``use_compile``), a ``torch.compile`` twin that runs
    its whole-image forwards."""
    if device is not None:
        model.to(device)
    model.eval()
    model.to(memory_format=torch.channels_last)
    keep_freed_memory()
    if use_compile(compile_mode, next(model.parameters()).device):
        _compiled[model] = torch.compile(model, dynamic=True)
    else:
        _compiled.pop(model, None)
    return model


def use_compile(mode: str, device: torch.device) -> bool:
    """Whether ``--compile mode`` compiles on ``device``.

    ``auto`` compiles on CUDA only: on a CPU the eager channels-last path is as fast as inductor's
    code (published architecture at 512x512, one thread: eager 1.85 s, compiled 2.03 s, after a 93 s
    compilation), so a compilation never pays back there. The twin has dynamic shapes: a new image
    size compiles again only where it crosses one of inductor's size thresholds (a few ranges), not
    per size. Tiles run eager (their hooks would make it recompile).
    """
    if mode not in COMPILE_MODES:
        raise InferenceError(f"--compile {mode}: expected one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        return device.type == "cuda"
    return mode == "on"


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise InferenceError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise InferenceError("--precision fp16: needs a CUDA device; use bf16 on a CPU")


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` (none for fp32)."""
    check_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def forward(
    model: nn.Module,
    x: torch.Tensor,
    task: str | torch.Tensor = "auto",
    precision: str = "fp32",
    routing_weights: torch.Tensor | None = None,
    compiled: bool = True,
) -> dict:
    """One forward on channels-last data in ``precision`` (by the compiled twin of ``model`` if it has
    one and ``compiled``); the output is float32."""
    x = x.contiguous(memory_format=torch.channels_last)
    run = _compiled.get(model, model) if compiled else model
    with torch.inference_mode(), autocast(precision, x.device):
        if not has_router(model):
            out = run(x)
        elif routing_weights is not None:
            out = run(x, task=task, routing_weights=routing_weights)
        else:
            out = run(x, task=task)
    return {**out, "output": out["output"].float()}


@contextmanager
def _pool_hooks(model: nn.Module, make_hook: Callable, pre: bool = False) -> Iterator[None]:
    """Install ``make_hook(name)`` on the average pool of every NAFBlock's channel attention."""
    handles = []
    for name, block in model.named_modules():
        if isinstance(block, NAFBlock):
            pool = block.sca[0]
            register = pool.register_forward_pre_hook if pre else pool.register_forward_hook
            handles.append(register(make_hook(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def record_attention(model: nn.Module, pooled: Pooled):
    """Context: store every NAFBlock's pooled features (B, C, 1, 1) in ``pooled``, by block name."""

    def make_hook(name: str):
        def hook(module, args, output):
            pooled[name] = output.detach().float()

        return hook

    return _pool_hooks(model, make_hook)


def impose_attention(model: nn.Module, pooled: Pooled):
    """Context: each NAFBlock uses its pooled features from ``pooled`` instead of its input's own."""

    def make_hook(name: str):
        def hook(module, args, output):
            if name in pooled:
                return pooled[name].to(output.dtype).expand_as(output)
            return None

        return hook

    return _pool_hooks(model, make_hook)


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int
    core: tuple[int, int, int, int]  # top, bottom, left, right: the pixels this tile stands for


def sum_attention_inputs(model: nn.Module, sums: Pooled, tile: Tile, pixels: int):
    """Context: add to ``sums`` every NAFBlock's features inside the core of ``tile``, each weighted by
    the share of the image's ``pixels`` it stands for; summed over all tiles (whose cores partition the
    image), these are the averages that a whole-image forward pools."""
    top, bottom, left, right = tile.core

    def make_hook(name: str):
        def hook(module, args):
            features = args[0]
            scale = tile.height // features.shape[-2]
            core = features[
                ...,
                (top - tile.top) // scale : (bottom - tile.top) // scale,
                (left - tile.left) // scale : (right - tile.left) // scale,
            ]
            total = core.float().sum(dim=(-2, -1), keepdim=True) * (scale * scale / pixels)
            sums[name] = sums[name] + total if name in sums else total

        return hook

    return _pool_hooks(model, make_hook, pre=True)


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    return [*range(0, length - size, stride), length - size]


def _cores(starts: list[int], size: int, length: int, align: int) -> list[tuple[int, int]]:
    """Split [0, length) between the tiles at ``starts`` at the middles of their overlaps."""
    cuts = [
        (start + prev + size) // 2 // align * align for prev, start in zip(starts, starts[1:], strict=False)
    ]
    bounds = [0, *cuts, length]
    return list(zip(bounds, bounds[1:], strict=False))


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int) -> list[Tile]:
    """Tiles of ``tile`` px (rounded down to a multiple of ``align``) covering a ``height`` x ``width``
    image whose sides are multiples of ``align``. Neighbours overlap by at least ``overlap`` px and every
    tile starts on the ``align`` grid, so its downsampled features line up with the whole image's."""
    size = max(align, tile // align * align)
    stride = max(align, (size - overlap) // align * align)
    rows, cols = _starts(height, size, stride), _starts(width, size, stride)
    tile_h, tile_w = min(size, height), min(size, width)
    row_cores, col_cores = _cores(rows, tile_h, height, align), _cores(cols, tile_w, width, align)
    return [
        Tile(top, left, tile_h, tile_w, (*row_core, *col_core))
        for top, row_core in zip(rows, row_cores, strict=True)
        for left, col_core in zip(cols, col_cores, strict=True)
    ]


def ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blending weights of one tile side: linear ramps over ``overlap`` px at inner edges."""
    w = torch.ones(length)
    n = min(overlap, length // 2)
    if n > 0:
        up = torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)
        if ramp_start:
            w[:n] = up
        if ramp_end:
            w[length - n :] = up.flip(0)
    return w


def routing_pass(
    model: nn.Module, image: torch.Tensor, task: str | torch.Tensor, precision: str, side: int
) -> tuple[dict, Pooled]:
    """Run the whole image (1, C, H, W) shrunk so that its longer side is at most ``side``; returns that
    forward's outputs (the routing decision) and every NAFBlock's pooled channel-attention features."""
    h, w = image.shape[-2:]
    scale = min(1.0, side / max(h, w))
    small = image
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    pooled: Pooled = {}
    with record_attention(model, pooled):
        routed = forward(model, small, task, precision, compiled=False)
    return routed, pooled


def restore_tiled(
    model: nn.Module,
    image: torch.Tensor,
    task: str | torch.Tensor,
    tile: int,
    overlap: int,
    precision: str,
    routing_side: int,
    attention: str,
) -> dict:
    """Restore one image (1, C, H, W) tile by tile; see the module docstring and ``restore``."""
    routed, pooled = routing_pass(model, image, task, precision, routing_side)
    h, w = image.shape[-2:]
    if max(h, w) <= routing_side:
        return routed
    routing = routed["pred_labels"] if has_router(model) else None
    align = getattr(model, "padder_size", 1)
    padded = pad_to_multiple(image, align)
    ph, pw = padded.shape[-2:]
    grid = tile_grid(ph, pw, tile, overlap, align)

    def crop(t: Tile) -> torch.Tensor:
        return padded[..., t.top : t.top + t.height, t.left : t.left + t.width]

    if attention == "two-pass":
        sums: Pooled = {}
        for t in grid:
            with impose_attention(model, pooled), sum_attention_inputs(model, sums, t, ph * pw):
                forward(model, crop(t), task, precision, routing, compiled=False)
        pooled = sums
    out = torch.zeros(padded.shape, dtype=torch.float32, device=image.device)
    total = torch.zeros((ph, pw), dtype=torch.float32, device=image.device)
    for t in grid:
        with impose_attention(model, pooled):
            restored = forward(model, crop(t), task, precision, routing, compiled=False)["output"]
        wy = ramp(t.height, overlap, t.top > 0, t.top + t.height < ph).to(image.device)
        wx = ramp(t.width, overlap, t.left > 0, t.left + t.width < pw).to(image.device)
        weight = wy[:, None] * wx[None, :]
        out[..., t.top : t.top + t.height, t.left : t.left + t.width] += restored * weight
        total[t.top : t.top + t.height, t.left : t.left + t.width] += weight
    out /= total
    return {**routed, "output": out[..., :h, :w]}


def restore(
    model: nn.Module,
    x: torch.Tensor,
    task: str | torch.Tensor = "auto",
    *,
    tile: int | None = None,
    overlap: int = 32,
    precision: str = "fp32",
    routing_side: int = ROUTING_SIDE,
    attention: str = "two-pass",
) -> dict:
    """Restore a batch ``x`` (B, C, H, W) with a model made ready by ``prepare``.

    ``task`` as in ``DeMoE.forward``. With ``tile`` set, each image larger than both one tile and
    ``routing_side`` is restored in tiles of ``tile`` px overlapping by at least ``overlap`` px, its
    routing decision made on the whole image shrunk to ``routing_side`` px, its channel attention as
    the module docstring says (``attention="one-pass"``: the shrunk image's, one pass fewer). An image
    no larger than ``routing_side`` is restored whole: its routing pass is the whole-image forward.
    Returns the keys of the model's forward: ``output`` float32 at the input size; for tiled images
    the other keys come from the shrunk pass that made the routing decision.
    """
    check_precision(precision, x.device)
    if attention not in ATTENTION_MODES:
        raise InferenceError(f"attention {attention!r}: expected one of {', '.join(ATTENTION_MODES)}")
    if tile is not None and tile <= overlap:
        raise InferenceError(f"--tile {tile}: must be larger than --tile-overlap ({overlap})")
    if tile is None or max(x.shape[-2:]) <= tile:
        return forward(model, x, task, precision)
    images = []
    for i in range(x.shape[0]):
        task_i = task if isinstance(task, str) else task.reshape(-1)[i : i + 1]
        images.append(
            restore_tiled(model, x[i : i + 1], task_i, tile, overlap, precision, routing_side, attention)
        )
    merged = {
        key: torch.cat([r[key] for r in images]) for key in images[0] if key not in ("bin_counts", "weights")
    }
    if "bin_counts" in images[0]:
        merged["bin_counts"] = torch.stack([r["bin_counts"] for r in images]).sum(dim=0)
        merged["weights"] = [
            torch.cat(blocks) for blocks in zip(*(r["weights"] for r in images), strict=True)
        ]
    return merged
