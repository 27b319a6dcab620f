"""ResNet encoder in plain torch, with torchvision's parameter names.

Weights saved from ``torchvision.models.resnet18/34`` load into it unchanged. The
stem stride is configurable: the reference Cerberus model uses a stride-1 7x7 stem,
so the five feature maps sit at scales 1, 1/2, 1/4, 1/8 and 1/16 of the input.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
#: Channels of the five feature maps (stem, layer1..layer4).
CHANNELS = (64, 64, 128, 256, 512)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet18/34 trunk returning the five feature maps, shallowest first.

    ``with_fc`` keeps the (unused) ImageNet classifier so that a full torchvision
    or original-release state dict loads without dropping keys.
    """

    def __init__(self, arch: str = "resnet34", stem_stride: int = 1, with_fc: bool = False) -> None:
        super().__init__()
        if arch not in LAYERS:
            raise ValueError(f"unknown encoder {arch!r}; choose from {sorted(LAYERS)}")
        self.conv1 = nn.Conv2d(3, 64, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks = LAYERS[arch]
        self.layer1 = self._make_layer(64, 64, blocks[0], 1)
        self.layer2 = self._make_layer(64, 128, blocks[1], 2)
        self.layer3 = self._make_layer(128, 256, blocks[2], 2)
        self.layer4 = self._make_layer(256, 512, blocks[3], 2)
        self.fc = nn.Linear(512, 1000) if with_fc else None

    @staticmethod
    def _make_layer(inplanes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(inplanes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        d0 = self.relu(self.bn1(self.conv1(x)))
        d1 = self.layer1(self.maxpool(d0))
        d2 = self.layer2(d1)
        d3 = self.layer3(d2)
        d4 = self.layer4(d3)
        return [d0, d1, d2, d3, d4]
