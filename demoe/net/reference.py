"""The published DeMoE forward pass, written out plainly: the baseline of ``demoe-eval perf`` and of the
equality tests of the fast inference path.

It runs on the parameters of a ``demoe.net.DeMoE`` but none of its modules' forward methods for the
NAFBlocks and MoE blocks: eager, NCHW contiguous fp32, NAFNet's LayerNorm2d formula (mean and variance
over channels, eps 1e-6), SimpleGate, simplified channel attention (average pool + 1x1 conv), and the
published MoE loop (top-k of the router softmax, renormalised, each selected expert run on the samples
that selected it with a non-zero weight, weighted outputs summed into a zero tensor).
"""

import torch
import torch.nn.functional as F

from demoe.net import DeMoE
from demoe.net.blocks import LayerNorm2d, NAFBlock, pad_to_multiple
from demoe.net.moe import MoEBlock


def layer_norm_2d(norm: LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    y = (x - mu) / (var + norm.eps).sqrt()
    return norm.weight.view(1, -1, 1, 1) * y + norm.bias.view(1, -1, 1, 1)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=1)
    return x1 * x2


def naf_block(block: NAFBlock, inp: torch.Tensor) -> torch.Tensor:
    x = layer_norm_2d(block.norm1, inp)
    x = block.conv1(x)
    x = block.conv2(x)
    x = simple_gate(x)
    x = x * block.sca[1](F.adaptive_avg_pool2d(x, 1))
    x = block.conv3(x)
    y = inp + x * block.beta
    x = block.conv4(layer_norm_2d(block.norm2, y))
    x = simple_gate(x)
    x = block.conv5(x)
    return y + x * block.gamma


def moe_block(moe: MoEBlock, feat: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_w, top_idx = weights.topk(moe.used, dim=1)
    top_w = top_w / top_w.sum(dim=1, keepdim=True)
    counts = torch.bincount(top_idx.flatten(), minlength=moe.num_experts)
    out = torch.zeros_like(feat)
    for e, expert in enumerate(moe.experts):
        gate = (top_w * (top_idx == e)).sum(dim=1)
        rows = (gate > 0).nonzero().flatten()
        if rows.numel() == 0:
            continue
        if rows.numel() == feat.shape[0]:
            out = out + naf_block(expert, feat) * gate.view(-1, 1, 1, 1)
        else:
            out[rows] += naf_block(expert, feat[rows]) * gate[rows].view(-1, 1, 1, 1)
    return out, counts


def forward(model: DeMoE, inp: torch.Tensor, task: str | torch.Tensor = "auto") -> dict:
    """The published ``DeMoE.forward`` on ``model``'s weights; returns the same keys as ``model(inp, task)``."""
    b, _, h, w = inp.shape
    inp = pad_to_multiple(inp.contiguous(), model.padder_size)
    x = model.intro(inp)
    skips = []
    for encoder, down in zip(model.encoders, model.downs, strict=True):
        for block in encoder.modules_list:
            x = naf_block(block, x)
        skips.append(x)
        x = down(x)
    router_logits = model.mlp_branch(x)
    if isinstance(task, str) and task == "auto":
        class_weights = torch.softmax(router_logits, dim=1)
    else:
        class_weights = model.forced_weights(task, b, router_logits)
    for block in model.middle_blks.modules_list:
        x = naf_block(block, x)
    bins, weights = [], []
    x, counts = moe_block(model.experts[0], x, class_weights)
    bins.append(counts)
    weights.append(class_weights)
    for decoder, up, skip, moe in zip(
        model.decoders, model.ups, reversed(skips), model.experts[1:], strict=True
    ):
        x = up(x) + skip
        for block in decoder.modules_list:
            x = naf_block(block, x)
        x, counts = moe_block(moe, x, class_weights)
        bins.append(counts)
        weights.append(class_weights)
    x = model.ending(x) + inp
    return {
        "output": x[:, :, :h, :w],
        "pred_labels": class_weights,
        "bin_counts": torch.stack(bins, dim=0),
        "weights": weights,
        "router_logits": router_logits,
    }
