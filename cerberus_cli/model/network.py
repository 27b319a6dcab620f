"""The Cerberus multi-task network.

Encoder (any kind of :mod:`cerberus_cli.model.encoder`; ResNet18/34 for the reference
model) -> 1x1 bridge (deepest level -> 256, no bias) -> one U-Net decoder per instance or
type head -> 1x1 output heads; plus a tissue classification head on the deepest
encoder features. Which heads exist is decided by :class:`ModelConfig` alone.

Module names mirror the original release (``decoders.<head>.<level>.block.<i>.conv``,
``heads.<head>.1.conv``, ...) so importing its weights is a pure renaming.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from cerberus_cli.model.config import DECODER_LEVELS, ModelConfig
from cerberus_cli.model.encoder import build_encoder

HEAD_HIDDEN = 96
BRIDGE_CHANNELS = 256


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class ConvBlock(nn.Module):
    """A sequence of conv->BN->ReLU layers (kept under ``.block`` for naming)."""

    def __init__(self, *layers: ConvBNReLU) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class PlainConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _decoder() -> nn.ModuleList:
    return nn.ModuleList(
        ConvBlock(ConvBNReLU(cin, mid, 3), ConvBNReLU(mid, cout, 3))
        for cin, mid, cout in DECODER_LEVELS
    )


def _output_head(channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBlock(ConvBNReLU(64, HEAD_HIDDEN, 1)), PlainConv(HEAD_HIDDEN, channels))


class TissueHead(nn.Module):
    """Patch-level tissue classifier on the deepest encoder features."""

    def __init__(self, classes: int, crop: int, channels: int) -> None:
        super().__init__()
        self.crop = crop
        self.bn1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(0.3)
        self.conv1 = nn.Conv2d(channels, 256, 1)
        self.bn2 = nn.BatchNorm2d(256)
        self.conv2 = nn.Conv2d(256, classes, 1)

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.bn1(pooled)))
        return self.conv2(F.relu(self.bn2(self.conv1(x))))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) for the centre ``crop`` x ``crop`` cells of the features."""
        h, w = feats.shape[-2:]
        ch, cw = min(self.crop, h), min(self.crop, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        centre = feats[..., y0:y0 + ch, x0:x0 + cw]
        return self._classify(centre.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def dense(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, h, w): the classifier slid over every crop-sized window.

        Output cell (i, j) classifies the window of feature cells starting at (i, j),
        i.e. the ``crop * stride`` pixel patch whose top-left is at ``(i, j) * stride``.
        """
        k = min(self.crop, *feats.shape[-2:])
        return self._classify(F.avg_pool2d(feats, k, stride=1))


class CerberusNet(nn.Module):
    """Cerberus multi-task network built from a :class:`ModelConfig`.

    ``forward`` takes RGB images (B, 3, H, W) with values 0..255 (uint8 or float) and
    returns a dict of logits: ``(B, C, H, W)`` per instance/type head and ``(B, C)`` for
    the tissue head (``(B, C, h, w)`` with ``tissue="dense"``).
    """

    def __init__(self, config: ModelConfig, with_fc: bool = False) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, config.stem_stride, with_fc=with_fc)
        deepest = self.encoder.channels[-1]
        self.seg_heads = [h.name for h in config.heads if h.kind in ("instance", "type")]
        if self.seg_heads:
            self.bridge = nn.Conv2d(deepest, BRIDGE_CHANNELS, 1, bias=False)
        self.decoders = nn.ModuleDict({n: _decoder() for n in self.seg_heads})
        self.heads = nn.ModuleDict(
            {h.name: _output_head(h.channels) for h in config.heads if h.name in self.seg_heads}
        )
        tissue = config.heads_of_kind("tissue")
        self.tissue_name = tissue[0].name if tissue else None
        self.tissue_head = TissueHead(tissue[0].channels, config.tissue_crop, deepest) if tissue else None

    def forward(
        self,
        images: torch.Tensor,
        heads: list[str] | None = None,
        tissue: str | None = "centre",
    ) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            images: (B, 3, H, W) RGB, 0..255.
            heads: segmentation heads to decode (default all); decoders not named are
                skipped entirely, which saves their compute.
            tissue: ``"centre"`` (one label per image), ``"dense"`` (a label map at the
                encoder stride) or ``None`` (skip the tissue head).
        """
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images / 255.0
        feats = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        names = self.seg_heads if heads is None else [h for h in self.seg_heads if h in heads]
        if names:
            bridge = self.bridge(feats[-1])
            for name in names:
                y = self.heads[name](self.decoder_maps(feats, name, bridge)[-1])
                if y.shape[-2:] != images.shape[-2:]:
                    y = F.interpolate(y, size=images.shape[-2:], mode="bilinear", align_corners=False)
                out[name] = y
        if self.tissue_head is not None and self.tissue_name is not None and tissue is not None:
            fn = self.tissue_head.dense if tissue == "dense" else self.tissue_head
            out[self.tissue_name] = fn(feats[-1])
        return out

    def decoder_maps(self, feats: list[torch.Tensor], name: str,
                     bridge: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The feature maps of head ``name``'s decoder, one per level, coarsest first.

        ``feats`` are the encoder's maps (``self.encoder(images / 255)``); ``bridge`` is
        ``self.bridge(feats[-1])`` when the caller already has it. Level ``k`` is at the
        resolution of the encoder map it adds as a skip (of a ResNet: layer3, layer2, layer1, stem);
        the last one (64 channels) is what the head's 1x1 layers read. ``forward``
        decodes with this method; transfer features read the levels themselves.
        """
        y = self.bridge(feats[-1]) if bridge is None else bridge
        maps = []
        for level, skip in zip(cast(nn.ModuleList, self.decoders[name]), reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = level(y + skip)
            maps.append(y)
        return maps


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
