"""Models for the benchmark suite, as ``file.py:callable`` targets for ``wasmai.convert``.

* :func:`resnet18` - a ResNet-18-class CNN (He et al. 2016, "Deep Residual Learning for Image
  Recognition", table 1: 7x7/2 stem, 3x3 max-pool, four stages of two BasicBlocks with 64, 128,
  256, 512 channels, global average pool, 1000-way linear; 11.7 M parameters), written in plain
  torch (no torchvision). **Random initialisation** (seeded): speed does not depend on the weights'
  values, so the timings stand for a trained ResNet-18, but its predictions mean nothing.
* :func:`tiny_mlp` - a 3-layer MLP (64 -> 256 -> 256 -> 10, ReLU), random init (seeded): the
  model is so small that the per-call cost of the component boundary dominates.

EfficientNet-Lite0 (pretrained) comes from ``examples/image-classification/model.py``.
"""

from __future__ import annotations

import torch
from torch import nn

MLP_IN = 64


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 topology for 3x224x224 inputs and 1000 classes."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet18() -> nn.Module:
    """ResNet-18-class CNN, random init (torch.manual_seed(0)), eval mode."""
    torch.manual_seed(0)
    model = ResNet18()
    # Non-trivial BatchNorm statistics so that the folded graph is not degenerate.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_mlp() -> nn.Module:
    """64 -> 256 -> 256 -> 10 MLP with ReLU, random init (torch.manual_seed(0)), eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(MLP_IN, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10)).eval()
