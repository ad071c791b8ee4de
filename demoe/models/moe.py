"""The MoE block: top-k of the router's weights per sample, each expert run on its own samples only."""

import torch
import torch.nn as nn

from demoe.models.blocks import NAFBlock


def topk_gate(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each row's k largest weights, renormalised to sum 1.

    Returns the dense gate (B, E) with zeros for unselected experts, and the selected indices (B, k).
    """
    top_w, top_idx = weights.topk(k, dim=1)
    top_w = top_w / top_w.sum(dim=1, keepdim=True)
    gate = torch.zeros_like(weights).scatter(1, top_idx, top_w)
    return gate, top_idx


class MoEBlock(nn.Module):
    def __init__(self, c: int, n: int = 5, used: int = 1):
        super().__init__()
        if not 1 <= used <= n:
            raise ValueError(f"k_used must be between 1 and the number of experts ({n}), got {used}")
        self.used = int(used)
        self.num_experts = n
        self.experts = nn.ModuleList(NAFBlock(c) for _ in range(n))

    def forward(self, feat: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mix the experts' outputs with the top-k gate of ``weights`` (B, E).

        Returns the mixed features, how many samples selected each expert (E,), and ``weights``.
        An expert whose gate is zero for a sample (a forced task with k > 1) is not run for it.
        """
        gate, top_idx = topk_gate(weights, self.used)
        counts = torch.bincount(top_idx.flatten(), minlength=self.num_experts)
        out = torch.zeros_like(feat)
        active = gate > 0
        for e, expert in enumerate(self.experts):
            rows = active[:, e].nonzero().flatten()
            if rows.numel() == 0:
                continue
            if rows.numel() == feat.shape[0]:
                out = out + expert(feat) * gate[:, e].view(-1, 1, 1, 1).to(feat.dtype)
            else:
                contrib = expert(feat.index_select(0, rows)) * gate[rows, e].view(-1, 1, 1, 1).to(feat.dtype)
                out = out.index_add(0, rows, contrib)
        return out, counts, weights
