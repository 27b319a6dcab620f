"""Decoder levels as feature levels: what a segmentation head's decoder sees.

Encoder levels (a ResNet's ``stem`` .. ``layer4``, ``bridge``) describe a patch; the type of a
nucleus a few pixels wide is decided in its head's decoder, at full resolution. A
decoder level is named ``<head>.<stage>`` (e.g. ``nuclei_type.hidden``):

- ``dec1`` .. ``dec4``: the four U-Net decoder levels of the head, coarsest first, at the
  resolution of the skip they add (encoder levels 3, 2, 1, 0: a ResNet's layer3, layer2,
  layer1, stem); 128, 64, 64, 64 channels.
- ``hidden``: the head's 1x1 conv-BN-ReLU on ``dec4`` (96 channels), the layer its class
  logits are a linear function of.

Decoder levels need a Cerberus model with that head; the encoder, bridge and decoders
then come from one network, so one forward pass per batch gives every level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from cerberus_cli.core.errors import InputError
from cerberus_cli.model.config import DECODER_LEVELS
from cerberus_cli.model.device import autocast
from cerberus_cli.model.encoder import level_names
from cerberus_cli.model.network import HEAD_HIDDEN, CerberusNet
from cerberus_cli.transfer.forward import PooledForward, to_tensor
from cerberus_cli.transfer.loaded_encoder import BRIDGE, Encoder

#: Stages of a head's decoder, coarsest first; ``hidden`` is the head's own 1x1 layer.
STAGES = ("dec1", "dec2", "dec3", "dec4", "hidden")
STAGE_CHANNELS = {**{f"dec{i + 1}": out for i, (_, _, out) in enumerate(DECODER_LEVELS)},
                  "hidden": HEAD_HIDDEN}
#: The encoder level (index, shallowest 0) whose resolution each stage has.
STAGE_RESOLUTION = {"dec1": 3, "dec2": 2, "dec3": 1, "dec4": 0, "hidden": 0}
#: Object features by default: the type decoders' last layers (cell and gland type live
#: there) and the encoder's two deepest levels for the context around the object.
OBJECT_STAGES = ("nuclei_type.hidden", "gland_type.hidden")
OBJECT_DEPTH = 2


def split_level(name: str) -> tuple[str, str] | None:
    """``(head, stage)`` of a decoder level name, None for an encoder level."""
    head, dot, stage = name.rpartition(".")
    return (head, stage) if dot and head and stage in STAGES else None


def check_level_names(layers: tuple[str, ...]) -> None:
    """Raise :class:`InputError` for names that are neither a level of some encoder kind
    (or ``bridge``) nor ``<head>.<stage>``; the encoder itself checks it has them."""
    known = (*level_names(), BRIDGE)
    bad = [n for n in layers if n not in known and split_level(n) is None]
    if bad:
        raise InputError(f"--layers: unknown level(s) {', '.join(bad)} (choose from "
                         f"{', '.join(known)}, or <head>.<stage> with stage in {', '.join(STAGES)})")


def needs_decoders(layers: tuple[str, ...]) -> bool:
    """True when any of ``layers`` is a decoder level."""
    return any(split_level(n) is not None for n in layers)


def default_layers(kind: str, heads: tuple[str, ...], encoder: Encoder) -> tuple[str, ...]:
    """The levels used when none are given: the encoder's deepest levels
    (:meth:`Encoder.default_levels`) for patches and grids; for objects,
    :data:`OBJECT_STAGES` of the heads the model has and the encoder's
    :data:`OBJECT_DEPTH` deepest levels (the default levels alone for a model without
    type heads)."""
    stages = tuple(n for n in OBJECT_STAGES if (s := split_level(n)) and s[0] in heads)
    if kind != "objects" or not stages:
        return encoder.default_levels()
    return (*stages, *encoder.trunk.levels[-OBJECT_DEPTH:])


def level_channels(name: str, channels: dict[str, int]) -> int:
    """Channels of one encoder or decoder level (``channels``: of the encoder's levels,
    :meth:`Encoder.level_channels`)."""
    split = split_level(name)
    return channels[name] if split is None else STAGE_CHANNELS[split[1]]


def level_dims(layers: tuple[str, ...], pooling: str, channels: dict[str, int]) -> dict[str, int]:
    """Feature dimension each level contributes (twice its channels with ``avgmax``)."""
    per = 2 if pooling == "avgmax" else 1
    return {name: level_channels(name, channels) * per for name in layers}


def level_stride(encoder: Encoder, name: str) -> int:
    """Input pixels per feature cell of an encoder or decoder level."""
    split = split_level(name)
    return encoder.stride(name if split is None else encoder.trunk.levels[STAGE_RESOLUTION[split[1]]])


def load_network(spec: str | None, random_seed: int | None, encoder: Encoder,
                 layers: tuple[str, ...]) -> CerberusNet:
    """The whole network behind ``encoder``, for its decoder levels.

    The encoder's trunk and bridge are replaced by the network's own, so that every
    level of a run comes from one set of weights (with ``random_seed``: the same seeded
    initialisation of the model's architecture as the encoder's).

    Raises:
        InputError: the encoder has no decoders, or lacks a head that ``layers`` name.
    """
    from cerberus_cli.model.registry import load_model

    if encoder.bridge is None:
        raise InputError(f"{encoder.source}: decoder levels ({', '.join(layers)}) need a "
                         "Cerberus model with segmentation heads; this encoder has none")
    loaded = load_model(spec)
    net = loaded.model
    if random_seed is not None:
        torch.manual_seed(random_seed)
        net = type(net)(loaded.config).eval()
    missing = sorted({s[0] for n in layers if (s := split_level(n)) and s[0] not in net.seg_heads})
    if missing:
        raise InputError(f"{encoder.source}: no head {', '.join(missing)} for decoder levels "
                         f"(the model's heads: {', '.join(net.seg_heads)})")
    encoder.trunk, encoder.bridge = net.encoder.eval(), net.bridge.eval()
    return net.eval()


@dataclass
class LevelForward(PooledForward):
    """:class:`PooledForward` whose levels may include decoder levels of ``network``."""

    network: CerberusNet | None = None

    def maps(self, patches: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Feature maps of equal-sized patches at the chosen encoder and decoder levels."""
        with autocast(self.device, self.dtype):
            return self.level_maps(to_tensor(patches, self.device))

    @torch.no_grad()
    def level_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{level: (B, C, h, w)}`` of uint8 RGB images ``(B, 3, H, W)``."""
        if not needs_decoders(self.layers):
            return self.encoder.maps(images, self.layers)
        if self.network is None:
            raise ValueError("decoder levels need the network (load_network)")
        maps = self.encoder.maps(images, self.encoder.levels())
        feats = [maps[name] for name in self.encoder.trunk.levels]
        out = {name: maps[name] for name in self.layers if name in maps}
        heads = dict.fromkeys(s[0] for n in self.layers if (s := split_level(n)))
        for head in heads:
            decoded = self.network.decoder_maps(feats, head, maps[BRIDGE])
            stages = dict(zip(STAGES, decoded))
            if f"{head}.hidden" in self.layers:
                hidden = cast(nn.Sequential, self.network.heads[head])[0]
                stages["hidden"] = hidden(decoded[-1])
            for stage, fmap in stages.items():
                out[f"{head}.{stage}"] = fmap
        return {name: out[name] for name in self.layers}
