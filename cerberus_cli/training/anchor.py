"""Feature anchoring: the deepest encoder block learns tissue type, segmentation stays.

The tissue-type head reads the encoder's deepest features (``layer4``). Every
segmentation decoder reads the shallower maps and the *bridge* output, a 1x1
projection of those deepest features from 512 to 256 channels. So in the tissue
stage with ``tune_deepest`` the shallower blocks stay frozen, ``layer4`` and the
bridge train, and this anchor holds the bridge output on segmentation patches to
that of the starting model: the decoders see what they saw before, while tissue
type is free to use the 256 directions that the bridge discards. ``layer4``'s batch
norms run on their running statistics throughout (the stage keeps everything but the
tissue head in eval mode), so the anchored outputs are the ones inference computes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cerberus_cli.core.errors import InputError
from cerberus_cli.model.network import CerberusNet


def _deepest_block(model: CerberusNet) -> nn.Module:
    """The encoder's deepest block (a ResNet's ``layer4``), which ``tune_deepest`` trains."""
    block = getattr(model.encoder, "layer4", None)
    if not isinstance(block, nn.Module):
        raise InputError(f"--tune-deepest: the {model.config.encoder} encoder has no deepest block "
                         "(layer4) to tune")
    return block


def tuned_modules(model: CerberusNet) -> list[nn.Module]:
    """The modules a ``tune_deepest`` tissue stage trains besides the tissue head."""
    return [_deepest_block(model), model.bridge]


class BridgeAnchor(nn.Module):
    """A frozen copy of the starting model's ``layer4`` and bridge, and the loss that
    keeps a model's bridge output on segmentation images equal to theirs."""

    def __init__(self, model: CerberusNet) -> None:
        super().__init__()
        if not model.seg_heads:
            raise InputError("--tune-deepest: the model has no segmentation heads whose features to keep")
        self.layer4 = copy.deepcopy(_deepest_block(model))
        self.bridge = copy.deepcopy(model.bridge)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()  # its batch-norm statistics are the target's; nothing puts it in train mode

    def loss(self, model: CerberusNet, images: torch.Tensor) -> torch.Tensor:
        """Relative squared error of ``model``'s bridge output against the anchor's.

        ``images`` are (B, 3, H, W) RGB 0..255. The shallower encoder blocks are shared
        (frozen), so the anchor's ``layer4`` runs on the model's own ``layer3`` output.
        """
        feats = model.encoder(images.float() / 255.0)
        with torch.no_grad():
            target = self.bridge(self.layer4(feats[3]))
        err = (model.bridge(feats[-1]).float() - target.float()).pow(2).mean()
        return err / target.float().pow(2).mean().clamp_min(1e-12)
