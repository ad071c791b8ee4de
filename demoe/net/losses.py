"""The training losses: a pixel loss on the restored image, an optional FFT loss, and the router's
cross-entropy on the task label (DeMoE's router supervision)."""

import torch
import torch.nn.functional as F

PIXEL_LOSSES = ("l1", "charbonnier")


def charbonnier_loss(restored: torch.Tensor, sharp: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((restored - sharp).pow(2) + eps * eps).mean()


def pixel_loss(restored: torch.Tensor, sharp: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(restored, sharp)
    if kind == "charbonnier":
        return charbonnier_loss(restored, sharp)
    raise ValueError(f"unknown pixel loss {kind!r}; expected one of {', '.join(PIXEL_LOSSES)}")


def fft_loss(restored: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """L1 distance between the 2-D spectra (real and imaginary parts), as in MIMO-UNet's frequency loss."""
    a = torch.view_as_real(torch.fft.rfft2(restored.float(), norm="backward"))
    b = torch.view_as_real(torch.fft.rfft2(sharp.float(), norm="backward"))
    return F.l1_loss(a, b)


def router_ce(router_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the router's logits on the task labels; unlabelled samples (-1) are left out.

    A batch without any label gives a zero that is still part of the graph, so that every process of a
    distributed run backpropagates through the same parameters.
    """
    labelled = labels >= 0
    if not bool(labelled.any()):
        return router_logits.float().sum() * 0.0
    return F.cross_entropy(router_logits[labelled].float(), labels[labelled])
