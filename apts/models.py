"""The networks of the experiments, picked by name.

- ``fcnn``: fully connected ReLU network. For 1×28×28 inputs it is the authors'
  784-32-32-10; for larger inputs (e.g. CIFAR-10's 3×32×32) a wider D-256-128-K.
- ``cnn``: two conv(3×3)-ReLU-maxpool(2) blocks with 32 and 64 channels, then
  Linear(64·⌊H/4⌋·⌊W/4⌋, 128)-ReLU-Linear(128, K).
- ``resnet18``: the CIFAR variant of ResNet-18 (He et al. 2016): 3×3 stem conv without
  max-pool, BasicBlocks [2, 2, 2, 2] with 64/128/256/512 channels, global average pool,
  linear head. It has BatchNorm: run its training forward passes in ``model.train()``
  mode (batch statistics) and evaluation in ``model.eval()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODELS", "BasicBlock", "ResNet18", "build_model", "count_parameters", "fcnn"]

MODELS = ("fcnn", "cnn", "resnet18")

# inputs up to this many values per sample (MNIST's 784) get the authors' small FCNN
_SMALL_INPUT = 28 * 28


def fcnn(in_features: int, num_classes: int, hidden: Sequence[int]) -> nn.Sequential:
    """Flatten, then Linear-ReLU for each width in ``hidden``, then a Linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _cnn(shape: Sequence[int], num_classes: int) -> nn.Sequential:
    c, h, w = shape
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


def build_model(
    name: str,
    shape: Sequence[int],
    num_classes: int,
    *,
    hidden: Sequence[int] | None = None,
) -> nn.Module:
    """The network ``name`` (one of :data:`MODELS`) for images of ``shape`` = (C, H, W).

    ``hidden`` overrides the fcnn's hidden widths (default: (32, 32) for inputs of at
    most 784 values, else (256, 128)); other models take no options.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if hidden is not None and key != "fcnn":
        raise ValueError(f"option 'hidden' only applies to fcnn, not {key}")
    if key == "fcnn":
        in_features = math.prod(shape)
        if hidden is None:
            hidden = (32, 32) if in_features <= _SMALL_INPUT else (256, 128)
        return fcnn(in_features, int(num_classes), hidden)
    if key == "cnn":
        return _cnn(shape, int(num_classes))
    return ResNet18(shape[0], int(num_classes))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
