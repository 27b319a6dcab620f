"""A transferred encoder with a new classification head, for ``cerberus finetune``.

The heads themselves (``linear``, ``cerberus``; each opened by a standardising layer)
are defined in :mod:`cerberus_cli.model.classifier`, where ``cerberus segment`` also
applies them. The pooled features of a trained encoder have very uneven scales
(per-channel means up to ~4 against standard deviations below 0.1), which makes plain
SGD on them ill-conditioned, so the head first maps each value to zero mean and unit
variance with statistics fitted once on the training patches (:func:`fit_standardisation`).
"""

from __future__ import annotations

import torch
from torch import nn

from cerberus_cli.model.classifier import HEAD_LEVELS, Standardise, head_dim, make_head
from cerberus_cli.model.encoder_protocol import FeatureEncoder
from cerberus_cli.transfer.loaded_encoder import NORMALISATIONS

__all__ = ["HEAD_LEVELS", "FinetuneNet", "Standardise", "fit_standardisation", "head_dim", "make_head"]


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

    def __init__(self, encoder: FeatureEncoder, head: str, classes: int, normalisation: str) -> None:
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
