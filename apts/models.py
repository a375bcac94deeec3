"""The networks of the experiments, each built from the data's image shape and class count.

A model config (``configs/model/<name>.yaml``) names its builder in ``_target_``; the
runner calls it with ``shape=(C, H, W)`` and ``num_classes`` of the dataset, every other
key (except the label ``name``) being an argument of the builder.

- :func:`fcnn`: fully connected ReLU network. For 1×28×28 inputs it is the authors'
  784-32-32-10; for larger inputs (e.g. CIFAR-10's 3×32×32) a wider D-256-128-K.
- :func:`cnn`: two conv(3×3)-ReLU-maxpool(2) blocks with 32 and 64 channels, then
  Linear(64·⌊H/4⌋·⌊W/4⌋, 128)-ReLU-Linear(128, K).
- :func:`resnet18`: the CIFAR variant of ResNet-18 (He et al. 2016): 3×3 stem conv without
  max-pool, BasicBlocks [2, 2, 2, 2] with 64/128/256/512 channels, global average pool,
  linear head. It has BatchNorm: run its training forward passes in ``model.train()``
  mode (batch statistics) and evaluation in ``model.eval()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "cnn", "count_parameters", "fcnn", "resnet18"]

# inputs up to this many values per sample (MNIST's 784) get the authors' small FCNN
_SMALL_INPUT = 28 * 28


def _checked(shape: Sequence[int], num_classes: int) -> tuple[tuple[int, ...], int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return shape, int(num_classes)


def fcnn(
    shape: Sequence[int], num_classes: int, hidden: Sequence[int] | None = None
) -> nn.Sequential:
    """Flatten, then Linear-ReLU for each width in ``hidden``, then a Linear head.

    ``hidden`` defaults to the authors' (32, 32) for inputs of at most 784 values
    (MNIST's), else (256, 128)."""
    shape, num_classes = _checked(shape, num_classes)
    width = math.prod(shape)
    if hidden is None:
        hidden = (32, 32) if width <= _SMALL_INPUT else (256, 128)
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"fcnn's hidden widths must be >= 1, got {list(hidden)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """conv(3×3, 32)-ReLU-maxpool(2), conv(3×3, 64)-ReLU-maxpool(2), then
    Linear(64·⌊H/4⌋·⌊W/4⌋, 128)-ReLU-Linear(128, K)."""
    (c, h, w), num_classes = _checked(shape, num_classes)
    if h < 4 or w < 4:
        raise ValueError(f"cnn needs images of at least 4x4 pixels, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    """y = ReLU(BN(conv3×3(ReLU(BN(conv3×3(x))))) + shortcut(x)); the shortcut is a
    strided 1×1 conv + BN when the shape changes, else the identity."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 for ``in_channels``-channel images of any size."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet18(shape: Sequence[int], num_classes: int) -> ResNet18:
    """The CIFAR-style ResNet-18 for ``shape[0]``-channel images of any size."""
    (c, _, _), num_classes = _checked(shape, num_classes)
    return ResNet18(c, num_classes)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
