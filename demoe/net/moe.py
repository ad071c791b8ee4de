"""The MoE block: top-k of the router's weights per sample, each expert run on its own samples only."""

import torch
import torch.nn as nn

from demoe.net.blocks import NAFBlock


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

    def forward(
        self, feat: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mix the experts' outputs with the top-k gate of ``weights`` (B, E).

        Returns the mixed features, how many samples selected each expert (E,), and ``weights``.
        Samples that selected the same expert run through it as one batch; an expert whose gate is
        zero for a sample (a forced task with k > 1) is not run for it. A sample's single active
        expert (k = 1, or a forced task) has gate exactly 1, so its output is used as is.
        """
        gate, top_idx = topk_gate(weights, self.used)
        counts = torch.bincount(top_idx.flatten(), minlength=self.num_experts)
        active = gate > 0
        num_active = active.sum(dim=1)
        batch = feat.shape[0]
        if bool((num_active == 1).all()):
            chosen = active.float().argmax(dim=1)
            first = int(chosen[0])
            if bool((chosen == first).all()):
                return self.experts[first](feat), counts, weights
            out = torch.empty_like(feat)
            for e in chosen.unique().tolist():
                rows = (chosen == e).nonzero().flatten()
                out.index_copy_(0, rows, self.experts[e](feat.index_select(0, rows)))
            return out, counts, weights
        out = None
        for e, expert in enumerate(self.experts):
            rows = active[:, e].nonzero().flatten()
            if rows.numel() == 0:
                continue
            scale = gate[rows, e].view(-1, 1, 1, 1).to(feat.dtype)
            if rows.numel() == batch:
                out = expert(feat) * scale if out is None else torch.addcmul(out, expert(feat), scale)
            else:
                out = torch.zeros_like(feat) if out is None else out
                out = out.index_add(0, rows, expert(feat.index_select(0, rows)) * scale)
        return out, counts, weights
