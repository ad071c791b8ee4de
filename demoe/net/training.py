"""What training a network needs of it beyond its forward: memory formats and train mode."""

import torch
import torch.nn as nn

from demoe.net import has_router

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def set_train_mode(model: nn.Module) -> None:
    """Training mode, except a frozen router, whose BatchNorm statistics and dropout stay fixed."""
    model.train()
    router = getattr(model, "mlp_branch", None)
    if router is not None and not any(p.requires_grad for p in router.parameters()):
        router.eval()


def leaves_experts_unused(model: nn.Module, routing: str) -> bool:
    """Whether a training step can leave parameters without gradient (DDP then has to look for them):
    top-k routing with k below the number of experts, or a forced expert."""
    if not has_router(model):
        return False
    return routing != "auto" or model.k_used < model.num_experts
