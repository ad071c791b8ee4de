"""DeMoE: a NAFNet U-Net whose decoder blocks are followed by Mixture-of-Experts blocks.

The router scores the experts once per image from the encoder's bottleneck; every MoE block (after
the middle blocks and after each decoder level) uses the same top-k decision. Keyword names, state
dict keys and the forward contract are those of the published implementation.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn

from demoe.net.blocks import BlockStack, pad_to_multiple
from demoe.net.moe import MoEBlock
from demoe.net.router import RouterHead
from demoe.vocab import TASKS, task_index

TaskArg = str | torch.Tensor


class DeMoE(nn.Module):
    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
        num_exp: int = 5,
        k_used: int = 3,
    ):
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError("enc_blk_nums and dec_blk_nums must have the same length")
        self.num_experts = num_exp
        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = BlockStack(width * 2 ** len(enc_blk_nums), middle_blk_num)
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.experts = nn.ModuleList()

        chan = width
        for num in enc_blk_nums:
            self.encoders.append(BlockStack(chan, num))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.experts.append(MoEBlock(chan, num_exp, k_used))
        for num in dec_blk_nums:
            self.ups.append(
                nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2))
            )
            chan //= 2
            self.decoders.append(BlockStack(chan, num))
            self.experts.append(MoEBlock(chan, num_exp, k_used))
        self.mlp_branch = RouterHead(width * 2 ** len(enc_blk_nums), num_classes=num_exp)
        self.padder_size = 2 ** len(enc_blk_nums)

    @property
    def k_used(self) -> int:
        return self.experts[0].used

    def set_k(self, k: int) -> None:
        """Use the top ``k`` experts in every MoE block from now on."""
        if not 1 <= k <= self.num_experts:
            raise ValueError(f"k must be between 1 and {self.num_experts}, got {k}")
        for block in self.experts:
            block.used = k

    def forced_weights(self, task: TaskArg, batch: int, like: torch.Tensor) -> torch.Tensor:
        """One-hot routing weights (B, E) for a task name or a per-sample tensor of task indices."""
        if isinstance(task, str):
            index = torch.full((batch,), task_index(task), dtype=torch.long, device=like.device)
        else:
            index = task.to(device=like.device, dtype=torch.long).reshape(batch)
        return nn.functional.one_hot(index, self.num_experts).to(like.dtype)

    def forward(
        self, inp: torch.Tensor, task: TaskArg = "auto", routing_weights: torch.Tensor | None = None
    ) -> dict:
        """Restore ``inp`` (B, C, H, W).

        ``task`` is ``'auto'`` (the router decides), a task name from ``TASKS`` forced for every
        sample, or a (B,) tensor of task indices forced per sample. ``routing_weights`` (B, E), when
        given, replaces both: every MoE block takes its top-k from these weights (tiled inference
        applies one decision, made on the whole image, to all of its tiles). Returns ``output``
        (cropped to the input size), ``pred_labels`` (the routing weights used: router softmax in
        auto mode, else the one-hot task), ``bin_counts`` (MoE blocks x experts), ``weights`` (per
        block) and ``router_logits`` (of this input's own router, also when it was overridden). The
        router runs in fp32 under autocast too, so that reduced precision does not tip its decisions.
        """
        b, _, h, w = inp.shape
        inp = pad_to_multiple(inp, self.padder_size)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        with torch.autocast(x.device.type, enabled=False):
            router_logits = self.mlp_branch(x.float())
        if routing_weights is not None:
            class_weights = routing_weights.to(device=router_logits.device, dtype=router_logits.dtype)
        elif isinstance(task, str) and task == "auto":
            class_weights = torch.softmax(router_logits, dim=1)
        else:
            class_weights = self.forced_weights(task, b, router_logits)

        bins, weights = [], []
        x = self.middle_blks(x)
        x, counts, weight = self.experts[0](x, class_weights)
        bins.append(counts)
        weights.append(weight)
        for decoder, up, skip, moe in zip(
            self.decoders, self.ups, reversed(skips), self.experts[1:], strict=True
        ):
            x = decoder(up(x) + skip)
            x, counts, weight = moe(x, class_weights)
            bins.append(counts)
            weights.append(weight)
        x = self.ending(x) + inp
        return {
            "output": x[:, :, :h, :w],
            "pred_labels": class_weights,
            "bin_counts": torch.stack(bins, dim=0),
            "weights": weights,
            "router_logits": router_logits,
        }


__all__ = ["DeMoE", "TASKS"]
