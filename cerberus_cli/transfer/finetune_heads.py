"""A transferred encoder with a new classification head, for ``cerberus finetune``.

Heads read globally average-pooled encoder levels: ``linear`` reads layer4 (Mormont et
al.); ``cerberus`` reads layer2, layer3 and layer4 concatenated (896 values) through two
fully connected layers (256 hidden units, ReLU, dropout 0.3), as the Cerberus paper's
patch classifier on several encoder levels.
"""

from __future__ import annotations

import torch
from torch import nn

from cerberus_cli.model.encoder import CHANNELS, ResNetEncoder
from cerberus_cli.transfer.encoder import NORMALISATIONS

#: Encoder levels (indices into the trunk's five maps) each head reads.
HEAD_LEVELS = {"linear": (4,), "cerberus": (2, 3, 4)}


def make_head(kind: str, classes: int) -> nn.Module:
    """A fresh head of ``kind`` for ``classes`` classes."""
    dim = sum(CHANNELS[i] for i in HEAD_LEVELS[kind])
    if kind == "linear":
        return nn.Linear(dim, classes)
    return nn.Sequential(nn.Linear(dim, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
                         nn.Linear(256, classes))


class FinetuneNet(nn.Module):
    """Encoder + head on uint8 RGB patches, normalised as the encoder expects."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: ResNetEncoder, head: str, classes: int, normalisation: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = head
        self.head = make_head(head, classes)
        mean, std = NORMALISATIONS[normalisation]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The head's input: pooled levels, concatenated (B, D)."""
        maps = self.encoder(self.normalise(images))
        return torch.cat([maps[i].mean(dim=(2, 3)) for i in HEAD_LEVELS[self.kind]], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(images))
