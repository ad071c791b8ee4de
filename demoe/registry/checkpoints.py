"""Loading and saving model weights in every format a DeMoE user brings, safely and strictly.

Formats read: the published ``{'params': state_dict, ...}`` (with or without DDP's ``module.``
prefix), BasicSR's ``params`` / ``params_ema``, a bare state dict, and safetensors. Pickles are
always read with ``weights_only=True``. Saving writes the published layout atomically, so the
original inference script can load our checkpoints.
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


def extract_state_dict(ckpt: dict, path: Path | str = "checkpoint", param_key: str | None = None) -> dict:
    """The model's state dict inside a checkpoint dict, with DDP/compile prefixes removed."""
    if param_key is not None:
        if param_key not in ckpt:
            raise CheckpointError(f"{path}: has no key {param_key!r}; its keys are {sorted(ckpt)[:8]}")
        state = ckpt[param_key]
    else:
        state = next((ckpt[k] for k in WRAPPER_KEYS if isinstance(ckpt.get(k), dict)), ckpt)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found (looked at {', '.join(WRAPPER_KEYS)})")
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


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


def load_weights(model: nn.Module, path: Path, param_key: str | None = None) -> dict:
    """Load ``path`` into ``model`` with strict key matching; return the checkpoint's other entries."""
    ckpt = read_checkpoint(path)
    state = extract_state_dict(ckpt, path, param_key)
    report = compare_keys(model, state)
    if not report.ok:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: {report.describe()}. "
            "Check that the zoo entry's architecture keywords match the checkpoint."
        )
    model.load_state_dict(state, strict=True)
    return {k: v for k, v in ckpt.items() if k not in WRAPPER_KEYS and not isinstance(v, torch.Tensor)}


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
