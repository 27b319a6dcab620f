"""A transferred encoder with a new classification head, for ``cerberus finetune``.

Heads read globally average-pooled encoder levels: ``linear`` reads layer4 (Mormont et
al.); ``cerberus`` reads layer2, layer3 and layer4 concatenated (896 values) through two
fully connected layers (256 hidden units, ReLU, dropout 0.3), as the Cerberus paper's
patch classifier on several encoder levels.

Every head starts with :class:`Standardise`: the pooled features of a trained encoder
have very uneven scales (per-channel means up to ~4 against standard deviations below
0.1), which makes plain SGD on them ill-conditioned, so the head first maps each value
to zero mean and unit variance with statistics fitted once on the training patches
(:func:`fit_standardisation`). The statistics are buffers of the head, saved with it, so
a head applied later (``cerberus segment``) sees inputs scaled as in training.
"""

from __future__ import annotations

import torch
from torch import nn

from cerberus_cli.model.encoder import CHANNELS, ResNetEncoder
from cerberus_cli.transfer.encoder import NORMALISATIONS

#: Encoder levels (indices into the trunk's five maps) each head reads.
HEAD_LEVELS = {"linear": (4,), "cerberus": (2, 3, 4)}


class Standardise(nn.Module):
    """``(x - mean) / std`` per feature, with fitted (not trained) statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, feats: torch.Tensor) -> None:
        """Take the mean and standard deviation of ``feats`` (N, dim); constant features
        get std 1 (they carry nothing and must not blow up)."""
        self.mean.copy_(feats.mean(0))
        std = feats.std(0) if len(feats) > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def head_dim(kind: str, channels: tuple[int, ...] = CHANNELS) -> int:
    """Width of the pooled features a head of ``kind`` reads."""
    return sum(channels[i] for i in HEAD_LEVELS[kind])


def make_head(kind: str, classes: int, channels: tuple[int, ...] = CHANNELS) -> nn.Sequential:
    """A fresh head of ``kind`` for ``classes`` classes (``channels``: of the trunk's maps)."""
    dim = head_dim(kind, channels)
    if kind == "linear":
        return nn.Sequential(Standardise(dim), nn.Linear(dim, classes))
    return nn.Sequential(Standardise(dim), nn.Linear(dim, 256), nn.ReLU(inplace=True),
                         nn.Dropout(0.3), nn.Linear(256, classes))


def fit_standardisation(head: nn.Module, feats: torch.Tensor) -> None:
    """Fit the :class:`Standardise` layer that opens ``head`` on training features."""
    first = head[0] if isinstance(head, nn.Sequential) else None
    if not isinstance(first, Standardise):
        raise TypeError("head has no standardising layer")
    first.fit(feats)


class FinetuneNet(nn.Module):
    """Encoder + head on uint8 RGB patches, normalised as the encoder expects."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: ResNetEncoder, head: str, classes: int, normalisation: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = head
        self.head = make_head(head, classes, encoder.channels)
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
