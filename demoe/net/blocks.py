"""NAFNet building blocks, with the parameter names of the published DeMoE checkpoints."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel axis of an NCHW tensor (NAFNet's LayerNorm2d, eps 1e-6).

    On channels-last data the channels are the innermost axis, so one ``F.layer_norm`` pass over a
    permuted view replaces the five elementwise passes of the NCHW formula.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            nhwc = x.permute(0, 2, 3, 1)
            return F.layer_norm(nhwc, nhwc.shape[-1:], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution. On channels-last data it is a matrix product over the innermost channel axis:
    no layout conversion, and no fall-back to the slow convolution kernel that PyTorch picks for 1x1
    convolutions on one thread."""
    if x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=1)
    return x1 * x2


class NAFBlock(nn.Module):
    """NAFNet's block: a gated depthwise-conv branch with simplified channel attention, then a gated FFN."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw_channel = c * dw_expand
        ffn_channel = c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw_channel, kernel_size=1)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, groups=dw_channel)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, kernel_size=1)
        self.sca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1)
        )
        self.conv4 = nn.Conv2d(c, ffn_channel, kernel_size=1)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, kernel_size=1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """NAFNet's computation with the per-channel scales folded into the 1x1 convs next to them:
        ``conv3(x * sca(x)) * beta`` and ``conv5(x) * gamma`` each become one conv whose small weight
        tensor is rescaled instead of the feature maps. The channel attention differs per sample, so
        in a batch of several it still multiplies the features."""
        x = pointwise_conv(self.norm1(inp), self.conv1.weight, self.conv1.bias)
        x = simple_gate(self.conv2(x))
        attention = self.sca(x)
        beta = self.beta.view(-1, 1, 1, 1)
        if x.shape[0] == 1:
            weight3 = self.conv3.weight * attention.view(1, -1, 1, 1) * beta
        else:
            x = x * attention
            weight3 = self.conv3.weight * beta
        y = pointwise_conv(x, weight3, self.conv3.bias * self.beta.view(-1))
        y += inp
        x = simple_gate(pointwise_conv(self.norm2(y), self.conv4.weight, self.conv4.bias))
        gamma = self.gamma.view(-1, 1, 1, 1)
        out = pointwise_conv(x, self.conv5.weight * gamma, self.conv5.bias * self.gamma.view(-1))
        out += y
        return out


class BlockStack(nn.Module):
    """A plain sequence of NAFBlocks stored as ``modules_list`` (the published checkpoints' key name)."""

    def __init__(self, channels: int, num_blocks: int):
        super().__init__()
        self.modules_list = nn.ModuleList(NAFBlock(channels) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.modules_list:
            x = block(x)
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of an NCHW tensor so both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))
