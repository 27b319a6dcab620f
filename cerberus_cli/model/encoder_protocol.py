"""What every encoder is: feature maps at named levels, with their strides and channels.

An encoder maps RGB images ``(B, 3, H, W)`` (already scaled and normalised) to one
feature map per level, shallowest first. Its :class:`EncoderGeometry` is all that the
rest of the house reads of it: the decoders and the tissue head of
:class:`~cerberus_cli.model.network.CerberusNet`, ``features`` (levels and their
widths), ``export-encoder`` (strides). An :class:`EncoderKind` builds the encoders of a
family (ResNets; a ViT, a pathology foundation model), knows their geometry without
building them, and recognises its plain state dicts; the kinds are registered in
:mod:`cerberus_cli.model.encoder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderGeometry:
    """Levels of an encoder, shallowest first: name, input px per cell, channels."""

    levels: tuple[str, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.levels or not len(self.levels) == len(self.strides) == len(self.channels):
            raise ValueError(f"an encoder geometry needs one stride and one channel count per "
                             f"level, got {self.levels}, {self.strides}, {self.channels}")

    def stride(self, level: str) -> int:
        """Input pixels per feature cell of ``level``."""
        return self.strides[self.levels.index(level)]

    def width(self, level: str) -> int:
        """Channels of ``level``."""
        return self.channels[self.levels.index(level)]


class FeatureEncoder(nn.Module):
    """Base of every encoder module: ``forward`` returns one map per level of ``geometry``.

    Subclasses set ``self.geometry`` in ``__init__`` and keep their parameters under the
    names their published weights use (so those load unchanged).
    """

    geometry: EncoderGeometry
    #: The registry name the encoder was built under (e.g. ``resnet34``).
    arch: str

    @property
    def levels(self) -> tuple[str, ...]:
        return self.geometry.levels

    @property
    def strides(self) -> tuple[int, ...]:
        return self.geometry.strides

    @property
    def channels(self) -> tuple[int, ...]:
        return self.geometry.channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class EncoderKind(Protocol):
    """A family of encoders, registered by one line in :data:`~cerberus_cli.model.encoder.KINDS`."""

    #: Registry names of the encoders this kind builds (e.g. ``resnet18``, ``resnet34``).
    names: tuple[str, ...]
    #: How its plain state dicts name their tensors (written into an exported sidecar).
    key_layout: str

    def geometry(self, name: str, stem_stride: int) -> EncoderGeometry:
        """The levels of encoder ``name`` without building it."""
        ...

    def build(self, name: str, stem_stride: int, with_fc: bool = False) -> FeatureEncoder:
        """A freshly initialised encoder ``name`` (``with_fc``: keep an ImageNet classifier
        that published full state dicts carry, so they load without dropping keys)."""
        ...

    def identify(self, state: Mapping[str, Any]) -> str | None:
        """Which of :attr:`names` a plain state dict (prefixes and task heads removed) is,
        or None when it is none of them."""
        ...
