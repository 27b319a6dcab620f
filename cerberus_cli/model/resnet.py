"""ResNet encoders in plain torch, with torchvision's parameter names: the ``resnet`` kind.

Weights saved from ``torchvision.models.resnet18/34/50`` load into them unchanged (resnet50
with bottleneck blocks, stride on the 3x3 convolution as torchvision's "v1.5"). The
stem stride is configurable: the reference Cerberus model uses a stride-1 7x7 stem,
so the five feature maps sit at scales 1, 1/2, 1/4, 1/8 and 1/16 of the input.
Another depth is one line in :data:`RESNETS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cerberus_cli.model.encoder_protocol import EncoderGeometry, FeatureEncoder


@dataclass(frozen=True)
class ResNetDepth:
    """Blocks per stage (layer1..layer4) and whether they are bottleneck blocks."""

    blocks: tuple[int, int, int, int]
    bottleneck: bool = False


#: Every ResNet built here, by registry name.
RESNETS = {
    "resnet18": ResNetDepth((2, 2, 2, 2)),
    "resnet34": ResNetDepth((3, 4, 6, 3)),
    "resnet50": ResNetDepth((3, 4, 6, 3), bottleneck=True),
}
#: The five levels, named as torchvision names the modules that produce them.
LEVELS = ("stem", "layer1", "layer2", "layer3", "layer4")
#: Down-sampling of each level relative to the stem's output.
SCALES = (1, 2, 4, 8, 16)
#: Channels of the levels of basic-block and of bottleneck ResNets (4x wider outputs).
BASIC_CHANNELS = (64, 64, 128, 256, 512)
BOTTLENECK_CHANNELS = (64, 256, 512, 1024, 2048)


def resnet_geometry(arch: str, stem_stride: int = 1) -> EncoderGeometry:
    """Levels, strides and channels of ResNet ``arch`` with a stem of ``stem_stride``."""
    if arch not in RESNETS:
        raise ValueError(f"unknown encoder {arch!r}; choose from {', '.join(RESNETS)}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    channels = BOTTLENECK_CHANNELS if RESNETS[arch].bottleneck else BASIC_CHANNELS
    return EncoderGeometry(LEVELS, tuple(s * stem_stride for s in SCALES), channels)


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


class ResNetEncoder(FeatureEncoder):
    """A ResNet of :data:`RESNETS` returning the five feature maps, shallowest first.

    ``with_fc`` keeps the (unused) ImageNet classifier so that a full torchvision
    or original-release state dict loads without dropping keys.
    """

    def __init__(self, arch: str = "resnet34", stem_stride: int = 1, with_fc: bool = False) -> None:
        super().__init__()
        self.geometry = resnet_geometry(arch, stem_stride)
        self.conv1 = nn.Conv2d(3, 64, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.arch = arch
        depth = RESNETS[arch]
        block: type[BasicBlock] | type[Bottleneck] = Bottleneck if depth.bottleneck else BasicBlock
        blocks = depth.blocks
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


class ResNetKind:
    """The ``resnet`` kind of encoder (:class:`~cerberus_cli.model.encoder_protocol.EncoderKind`)."""

    names = tuple(RESNETS)
    key_layout = "torchvision.models.resnet (no fc)"

    def geometry(self, name: str, stem_stride: int) -> EncoderGeometry:
        return resnet_geometry(name, stem_stride)

    def build(self, name: str, stem_stride: int, with_fc: bool = False) -> ResNetEncoder:
        return ResNetEncoder(name, stem_stride, with_fc=with_fc)

    def identify(self, state: Mapping[str, Any]) -> str | None:
        """The ResNet whose block layout a torchvision-style state dict has."""
        if "conv1.weight" not in state:
            return None
        bottleneck = "layer1.0.conv3.weight" in state
        counts = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")})
                       for i in range(1, 5))
        return next((name for name, depth in RESNETS.items()
                     if depth.blocks == counts and depth.bottleneck == bottleneck), None)


RESNET = ResNetKind()
