"""A tiny ResNet-style conv net for small images (e.g. 1x16x16 synthetic shapes).

stem conv -> ``n_blocks`` residual blocks (conv-BN-ReLU-conv-BN + skip, stride 2 when the width
doubles) -> global average pool -> linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ConvNetConfig:
    in_channels: int = 1
    num_classes: int = 4
    width: int = 16
    n_blocks: int = 2


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ConvNet(nn.Module):
    """``ConvNet(cfg)(images)`` -> logits (B, num_classes); images (B, C, H, W)."""

    def __init__(self, cfg: ConvNetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.width),
            nn.ReLU(),
        )
        blocks, c = [], cfg.width
        for i in range(cfg.n_blocks):
            c_out = c * 2 if i > 0 else c
            blocks.append(ResidualBlock(c, c_out, stride=2 if c_out != c else 1))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, cfg.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))
