"""The router: a classification head on the encoder's bottleneck that scores the five experts."""

import torch
import torch.nn as nn


class RouterHead(nn.Module):
    """1x1 bottleneck conv + BatchNorm, a sigmoid spatial attention, then an MLP classifier.

    Submodule indices match the published ``mlp_branch`` keys. BatchNorm and Dropout make routing
    deterministic only in ``eval()``.
    """

    def __init__(self, in_channels: int, num_classes: int = 5, hidden: int = 256):
        super().__init__()
        self.conv_bottleneck = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Dropout2d(0.2),
        )
        self.attention = nn.Sequential(nn.Conv2d(hidden, 1, kernel_size=1), nn.Sigmoid())
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, hidden // 2),
            nn.BatchNorm1d(hidden // 2),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the router logits, shape (B, num_classes)."""
        x = self.conv_bottleneck(x)
        return self.classifier(x * self.attention(x))
