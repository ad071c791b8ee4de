"""The dense baseline: DeMoE's encoder/decoder with one NAFBlock where each MoE block is, and no router.

It is the NAFNet-like baseline of the DeMoE paper: comparing it with DeMoE shows what the experts buy.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn

from demoe.net.blocks import BlockStack, NAFBlock, pad_to_multiple


class DenseNAFNet(nn.Module):
    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
    ):
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError("enc_blk_nums and dec_blk_nums must have the same length")
        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.post_blocks = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(BlockStack(chan, num))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = BlockStack(chan, middle_blk_num)
        self.post_blocks.append(NAFBlock(chan))
        for num in dec_blk_nums:
            self.ups.append(
                nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2))
            )
            chan //= 2
            self.decoders.append(BlockStack(chan, num))
            self.post_blocks.append(NAFBlock(chan))
        self.padder_size = 2 ** len(enc_blk_nums)

    def forward(self, inp: torch.Tensor, task: str = "auto") -> dict:
        """Restore ``inp``; the dense network has no experts, so only ``task='auto'`` is accepted."""
        if not (isinstance(task, str) and task == "auto"):
            raise ValueError("the dense baseline has no experts to force: use task='auto'")
        h, w = inp.shape[-2:]
        inp = pad_to_multiple(inp, self.padder_size)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.post_blocks[0](self.middle_blks(x))
        for decoder, up, skip, post in zip(
            self.decoders, self.ups, reversed(skips), self.post_blocks[1:], strict=True
        ):
            x = post(decoder(up(x) + skip))
        x = self.ending(x) + inp
        return {"output": x[:, :, :h, :w]}
