"""The encoder of a model as a plain state dict in its kind's key layout, for detectors
and other tools.

For a ResNet (the layout is torchvision's), ``encoder.pt`` holds ``conv1.weight``,
``layer1.0.conv1.weight``, ... (no ``fc``), loadable with ``torch.load(weights_only=True)`` into
``torchvision.models.resnet18/34/50`` (``strict=False`` for the missing ``fc``) or a
detectron2/mmdet ResNet backbone. ``encoder.json`` beside it says what the weights
expect: stem stride (1 for the reference Cerberus model, where torchvision uses 2),
input normalisation, resolution (mpp), the key layout, the strides of the levels after
the first (a ResNet's C2..C5, as detectors name them) and where they came from.

The source is anything ``features`` reads: a registry name, a checkpoint (e.g. a
``pretrain`` or ``finetune`` result), a torchvision-layout state dict or a
multitask-dipath release checkpoint; exporting an exported encoder gives the same
tensors and sidecar settings back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cerberus_cli import __version__
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError
from cerberus_cli.model.encoder import encoder_kind
from cerberus_cli.transfer.loaded_encoder import NORMALISATIONS, sidecar_path
from cerberus_cli.transfer.options import ExportOptions


def encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's tensors under torchvision names (``fc`` left out)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if not k.startswith("fc.")}


def export_encoder(model_spec: str | None, output: str | os.PathLike,
                   options: ExportOptions | None = None) -> tuple[Path, Path]:
    """Write the encoder of ``model_spec`` to ``output`` and its JSON sidecar; both atomic."""
    options = options or ExportOptions()
    out = Path(output)
    if out.suffix not in (".pt", ".pth"):
        raise InputError(f"{out}: the encoder file name must end in .pt or .pth")
    from cerberus_cli.transfer.pretrain import checked_encoder

    encoder = checked_encoder(model_spec)
    stem = encoder.stem_stride
    state = encoder_state(encoder.trunk)
    mean, std = NORMALISATIONS[encoder.normalisation]
    side: dict[str, Any] = {
        "format": "cerberus-cli/encoder",
        "format_version": 1,
        "arch": encoder.arch,
        "key_layout": encoder_kind(encoder.arch).key_layout,
        "stem_stride": stem,
        "normalisation": encoder.normalisation,
        "input": {"channels": "RGB", "scale": "value / 255", "mean": list(mean), "std": list(std)},
        "mpp": encoder.mpp,
        "feature_strides": dict(list(zip(encoder.trunk.levels, encoder.trunk.strides))[1:]),
        "source_model": {"name": encoder.name, "sha256": encoder.sha256, "file": encoder.source},
        "tensors": len(state),
        "package_version": __version__,
    }
    side_path = sidecar_path(out)
    weights = AtomicPath(out, overwrite=options.overwrite)
    meta = AtomicPath(side_path, overwrite=options.overwrite)
    try:
        torch.save(state, weights.tmp)
        meta.tmp.write_text(json.dumps(side, indent=2))
        weights.commit()
        meta.commit()
    except BaseException:
        weights.abort()
        meta.abort()
        raise
    return out, side_path
