"""ResNet encoder in plain torch, with torchvision's parameter names.

Weights saved from ``torchvision.models.resnet18/34/50`` load into it unchanged (resnet50
with bottleneck blocks, stride on the 3x3 convolution as torchvision's "v1.5"). The
stem stride is configurable: the reference Cerberus model uses a stride-1 7x7 stem,
so the five feature maps sit at scales 1, 1/2, 1/4, 1/8 and 1/16 of the input.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
#: Encoders built from bottleneck blocks (4x wider outputs).
BOTTLENECK = frozenset({"resnet50"})
#: Channels of the five feature maps (stem, layer1..layer4) of the basic-block encoders.
CHANNELS = (64, 64, 128, 256, 512)
#: The same for bottleneck encoders.
BOTTLENECK_CHANNELS = (64, 256, 512, 1024, 2048)


def encoder_channels(arch: str) -> tuple[int, ...]:
    """Channels of the five feature maps of encoder ``arch``."""
    return BOTTLENECK_CHANNELS if arch in BOTTLENECK else CHANNELS


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


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet18/34/50 trunk returning the five feature maps, shallowest first.

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
        self.arch = arch
        #: Channels of the five feature maps this trunk returns.
        self.channels = encoder_channels(arch)
        block: type[BasicBlock] | type[Bottleneck] = Bottleneck if arch in BOTTLENECK else BasicBlock
        blocks = LAYERS[arch]
        c = self.channels
        self.layer1 = self._make_layer(block, 64, 64, blocks[0], 1)
        self.layer2 = self._make_layer(block, c[1], 128, blocks[1], 2)
        self.layer3 = self._make_layer(block, c[2], 256, blocks[2], 2)
        self.layer4 = self._make_layer(block, c[3], 512, blocks[3], 2)
        self.fc = nn.Linear(c[4], 1000) if with_fc else None

    @staticmethod
    def _make_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                    n: int, stride: int) -> nn.Sequential:
        width = planes * block.expansion
        layers = [block(inplanes, planes, stride)]
        layers += [block(width, planes) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        d0 = self.relu(self.bn1(self.conv1(x)))
        d1 = self.layer1(self.maxpool(d0))
        d2 = self.layer2(d1)
        d3 = self.layer3(d2)
        d4 = self.layer4(d3)
        return [d0, d1, d2, d3, d4]
