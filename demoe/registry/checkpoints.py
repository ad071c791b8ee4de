"""Loading and saving model weights in every format a DeMoE user brings, safely and strictly.

Formats read: the published ``{'params': state_dict, ...}`` (with or without DDP's ``module.``
prefix), BasicSR's ``params`` / ``params_ema``, a bare state dict, and safetensors. Pickles are
always read with ``weights_only=True``. Nothing is changed silently: a file holding a key both with and
without DDP's prefix is refused, and tensors stored in another dtype than the model's are cast only when
asked (``cast_weights``). Saving writes the published layout atomically, so the original inference
script can load our checkpoints.
"""

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from demoe.errors import DemoeError
from demoe.fileio import atomic_write

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(DemoeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: the safetensors file is damaged or truncated ({e})") from None


def read_checkpoint(path: Path) -> dict:
    """Read a checkpoint file into a dict without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path}: refused, loading it would execute pickled code (weights_only=True failed). "
                "Re-save it as a plain state dict or safetensors in a trusted environment."
            ) from None
        raise CheckpointError(f"{path}: the checkpoint is damaged or truncated ({e})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: the checkpoint is damaged or truncated ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _wrappers(ckpt: dict) -> list[str]:
    return [k for k, v in ckpt.items() if isinstance(v, dict)]


def select_state_dict(
    ckpt: dict, path: Path | str = "checkpoint", param_key: str | None = None
) -> tuple[str | None, dict]:
    """(the checkpoint's entry that holds the weights, None for a bare state dict; that state dict with
    DDP/compile prefixes removed). Without ``param_key`` the first of ``WRAPPER_KEYS`` present is used,
    so ``params`` wins over ``params_ema`` in a file holding both."""
    if param_key is not None:
        if not isinstance(ckpt.get(param_key), dict):
            found = _wrappers(ckpt)
            holds = f"its entries are {', '.join(found)}" if found else "it holds a bare state dict"
            raise CheckpointError(
                f"{path}: has no entry {param_key!r} ({holds}); name one of them with --param-key "
                "(checkpoint.param_key in a zoo entry), or leave it out"
            )
        key = param_key
    else:
        key = next((k for k in WRAPPER_KEYS if isinstance(ckpt.get(k), dict)), None)
    state = ckpt[key] if key is not None else ckpt
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        looked = param_key or ", ".join(WRAPPER_KEYS)
        raise CheckpointError(f"{path}: no state dict of tensors found (looked at {looked})")
    out: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for name, value in state.items():
        stripped = name
        for prefix in PREFIXES:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
        if stripped in out:
            raise CheckpointError(
                f"{path}: keys {original[stripped]!r} and {name!r} are both {stripped!r} once DDP's "
                "'module.' (or compile's '_orig_mod.') prefix is removed; re-save the checkpoint with one "
                "copy of each weight"
            )
        out[stripped], original[stripped] = value, name
    return key, out


def extract_state_dict(ckpt: dict, path: Path | str = "checkpoint", param_key: str | None = None) -> dict:
    """The model's state dict inside a checkpoint dict, with DDP/compile prefixes removed."""
    return select_state_dict(ckpt, path, param_key)[1]


@dataclass
class KeyReport:
    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[tuple[str, tuple, tuple]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 5) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({', '.join(self.missing[:limit])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({', '.join(self.unexpected[:limit])})")
        if self.wrong_shape:
            shown = ", ".join(f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.wrong_shape[:limit])
            parts.append(f"{len(self.wrong_shape)} with the wrong shape ({shown})")
        return "; ".join(parts)


def compare_keys(model: nn.Module, state: dict) -> KeyReport:
    expected = model.state_dict()
    return KeyReport(
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        wrong_shape=[
            (k, tuple(state[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ],
    )


def dtype_changes(model: nn.Module, state: dict) -> dict[str, int]:
    """``{"float16->float32": n}``: how many of ``state``'s tensors have another dtype than the model's."""
    expected = model.state_dict()
    changes: dict[str, int] = {}
    for key, value in state.items():
        if key in expected and value.dtype != expected[key].dtype:
            change = f"{value.dtype}->{expected[key].dtype}".replace("torch.", "")
            changes[change] = changes.get(change, 0) + 1
    return changes


@dataclass(frozen=True)
class LoadedWeights:
    """What loading a checkpoint did: which entry held the weights, which dtypes were cast, the rest."""

    param_key: str | None  # the file's entry that held the weights; None for a bare state dict
    cast: dict[str, int]  # {"float16->float32": tensors}, empty when every dtype was the model's
    meta: dict  # the checkpoint's other plain entries (epoch, best_psnr, ...)


def load_checkpoint(
    model: nn.Module, path: Path, param_key: str | None = None, cast_weights: bool = False
) -> LoadedWeights:
    """Load ``path`` into ``model`` with strict key matching. Tensors of another dtype than the model's
    are refused unless ``cast_weights``, so that what was evaluated is never a silent conversion."""
    ckpt = read_checkpoint(path)
    key, state = select_state_dict(ckpt, path, param_key)
    report = compare_keys(model, state)
    if not report.ok:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: {report.describe()}. "
            "Check that the zoo entry's architecture keywords match the checkpoint."
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"{path}: {len(broken)} tensors hold NaN or infinite values (first {broken[0]}); the training "
            "that wrote it diverged: use an earlier checkpoint"
        )
    cast = dtype_changes(model, state)
    if cast and not cast_weights:
        counts = ", ".join(f"{n} {change}" for change, n in cast.items())
        raise CheckpointError(
            f"{path}: {sum(cast.values())} tensors are stored in another dtype than the model's ({counts}); "
            "pass --cast-weights (cast_weights: true in the zoo entry's checkpoint) to convert them"
        )
    model.load_state_dict(state, strict=True)
    meta = {
        k: v
        for k, v in ckpt.items()
        if k not in WRAPPER_KEYS and k != key and not isinstance(v, torch.Tensor)
    }
    return LoadedWeights(param_key=key, cast=cast, meta=meta)


def load_weights(
    model: nn.Module, path: Path, param_key: str | None = None, cast_weights: bool = False
) -> dict:
    """Load ``path`` into ``model`` (``load_checkpoint``); return the checkpoint's other entries."""
    return load_checkpoint(model, path, param_key, cast_weights).meta


def save_checkpoint(path: Path, model_or_state: nn.Module | dict, **meta) -> Path:
    """Atomically write ``{'params': state_dict, **meta}`` (meta must hold plain Python values)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {k: str(v) for k, v in meta.items()}
        return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return atomic_write(path, lambda tmp: torch.save({"params": state, **meta}, tmp))
