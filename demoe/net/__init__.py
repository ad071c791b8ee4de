"""The networks: DeMoE and its dense baseline. Tensors in, tensors out: no files, YAML or logging."""

import torch.nn as nn

from demoe.net.demoe import DeMoE
from demoe.net.dense import DenseNAFNet
from demoe.vocab import ARCHITECTURE_NAMES

ARCHITECTURES = {"DeMoE": DeMoE, "DenseNAFNet": DenseNAFNet}
assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES


def has_router(model: nn.Module) -> bool:
    """Whether ``model`` routes between experts (DeMoE) rather than being dense."""
    return isinstance(getattr(model, "mlp_branch", None), nn.Module)


__all__ = ["ARCHITECTURES", "DeMoE", "DenseNAFNet", "has_router"]
