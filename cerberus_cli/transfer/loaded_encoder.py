"""Loading an encoder for transfer, and running it to feature maps at named levels.

An :class:`Encoder` is the encoder of a Cerberus model (plus its 1x1 bridge when the
model has decoders), or a plain state dict of any registered encoder kind
(:mod:`cerberus_cli.model.encoder`: a torchvision-layout ResNet18/34/50 from ImageNet or
elsewhere, or the release checkpoints of Mormont et al.'s multitask-dipath, whose
keys are ``features.*`` for the trunk and ``heads.*`` for the task heads), or a seeded
random initialisation of a model's architecture (a baseline). Its levels are the
encoder's own (a ResNet: ``stem``, ``layer1`` .. ``layer4``) plus ``bridge``; it maps
uint8 RGB batches to the feature maps of the requested levels.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cerberus_cli.core.errors import CheckpointError, InputError, first_line
from cerberus_cli.core.hashing import file_sha256
from cerberus_cli.model.encoder import build_encoder, encoder_names, identify_state
from cerberus_cli.model.encoder_protocol import FeatureEncoder
from cerberus_cli.model.network import BRIDGE_CHANNELS

#: The Cerberus 1x1 conv every decoder reads, a level after the encoder's deepest.
BRIDGE = "bridge"
#: How many of the encoder's deepest levels patch and grid features pool by default.
DEFAULT_DEPTH = 3
#: Input normalisations: our models see RGB/255; torchvision ImageNet encoders also
#: subtract the ImageNet mean and divide by its standard deviation.
NORMALISATIONS = {
    "rgb/255": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class Encoder:
    """An encoder ready to produce feature maps, with where it came from."""

    trunk: FeatureEncoder
    bridge: nn.Module | None
    arch: str
    stem_stride: int
    mpp: float
    normalisation: str
    name: str
    sha256: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def level_channels(self) -> dict[str, int]:
        """Channels of each level of this encoder."""
        channels = dict(zip(self.trunk.levels, self.trunk.channels))
        return {**channels, BRIDGE: BRIDGE_CHANNELS} if self.bridge is not None else channels

    def levels(self) -> tuple[str, ...]:
        """Levels this encoder can give (``bridge`` only for Cerberus models with decoders)."""
        return (*self.trunk.levels, BRIDGE) if self.bridge is not None else self.trunk.levels

    def default_levels(self) -> tuple[str, ...]:
        """The levels patch and grid features pool when none are named: the deepest few."""
        return self.trunk.levels[-DEFAULT_DEPTH:]

    def stride(self, level: str) -> int:
        """Input pixels per feature cell of ``level``."""
        return self.trunk.strides[-1] if level == BRIDGE else self.trunk.geometry.stride(level)

    def check_layers(self, layers: tuple[str, ...]) -> None:
        """Raise :class:`InputError` for levels this encoder does not have."""
        bad = [name for name in layers if name not in self.levels()]
        if bad:
            raise InputError(f"{self.source}: no level {', '.join(bad)} in this encoder "
                             f"(choose from {', '.join(self.levels())})")

    def to(self, device: torch.device) -> Encoder:
        self.trunk = self.trunk.to(device).eval()
        if self.bridge is not None:
            self.bridge = self.bridge.to(device).eval()
        return self

    @torch.no_grad()
    def maps(self, images: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Feature maps ``{level: (B, C, h, w)}`` of uint8 RGB images ``(B, 3, H, W)``."""
        x = images.float() / 255.0
        if self.normalisation != "rgb/255":
            mean, std = NORMALISATIONS[self.normalisation]
            m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
            s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
            x = (x - m) / s
        feats = dict(zip(self.trunk.levels, self.trunk(x)))
        if BRIDGE in layers:
            feats[BRIDGE] = self.bridge(feats[self.trunk.levels[-1]])  # type: ignore[misc]
        return {name: feats[name] for name in layers}


def _model_encoder(spec: str | None, random_seed: int | None) -> Encoder:
    from cerberus_cli.model.registry import load_model

    loaded = load_model(spec)
    net = loaded.model
    name = loaded.config.name
    sha = loaded.sha256
    if random_seed is not None:
        # Same architecture, fresh weights: the baseline a trained encoder must beat.
        torch.manual_seed(random_seed)
        net = type(net)(loaded.config).eval()
        name, sha = f"random-{loaded.config.encoder}-seed{random_seed}", ""
    bridge = getattr(net, "bridge", None) if net.seg_heads else None
    return Encoder(net.encoder, bridge, loaded.config.encoder, loaded.config.stem_stride,
                   loaded.config.mpp, "rgb/255", name, sha, str(loaded.source),
                   {"provenance_of_model": "random init" if random_seed is not None else "file"})


def _is_plain_state(obj: Any) -> bool:
    """A bare state dict (names to tensors), not one of our or the release's checkpoints."""
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _is_mtdp_state(obj: Any) -> bool:
    """Keys of a multitask-dipath release checkpoint: ``features.*`` (+ ``heads.*``)."""
    return _is_plain_state(obj) and all(
        k.removeprefix("module.").startswith(("features.", "heads.")) for k in obj) and any(
        "features." in k for k in obj)


def _unwrapped(obj: Any) -> Any:
    """The state dict inside a ``{"state_dict": ...}`` wrapper of training scripts."""
    if isinstance(obj, dict) and "format" not in obj and _is_plain_state(obj.get("state_dict")):
        return obj["state_dict"]
    return obj


def trunk_state(obj: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a plain state dict: ``module.`` and ``features.`` prefixes
    (DataParallel, multitask-dipath) stripped, ``fc.*`` and ``heads.*`` left out."""
    state = {}
    for k, v in obj.items():
        k = k.removeprefix("module.").removeprefix("features.")
        if not k.startswith(("fc.", "heads.")):
            state[k] = v
    return state


def load_state_dict_encoder(path: str | os.PathLike, mpp: float, stem_stride: int = 2,
                            normalisation: str = "imagenet") -> Encoder:
    """A plain state dict file of a registered encoder kind (a torchvision-layout
    ResNet18/34/50, a multitask-dipath release checkpoint) as an :class:`Encoder`.

    Which encoder it is comes from its keys (:func:`~cerberus_cli.model.encoder.identify_state`);
    every tensor but ``fc.*`` / ``heads.*`` must then match exactly (names and shapes).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable state dict: {first_line(exc)}") from None
    obj = _unwrapped(obj)
    if not _is_plain_state(obj):
        raise CheckpointError(f"{path}: not a state dict of an encoder (names to tensors)")
    state = trunk_state(obj)
    arch = identify_state(state)
    if arch is None:
        what = "a multitask-dipath checkpoint" if _is_mtdp_state(obj) else "a state dict"
        raise CheckpointError(f"{path}: {what} of an encoder none of the kinds here builds "
                              f"(its keys and blocks match none of {', '.join(encoder_names())})")
    trunk = build_encoder(arch, stem_stride)
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        found = re.search(r"size mismatch for [\w.]+", str(exc))
        raise CheckpointError(f"{path}: not a {arch} state dict "
                              f"({found.group(0) if found else first_line(exc)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: not a {arch} state dict (missing "
                              f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    kind = "multitask-dipath release checkpoint" if _is_mtdp_state(obj) else f"{arch} state dict"
    return Encoder(trunk.eval(), None, arch, stem_stride, mpp, normalisation, path.stem,
                   file_sha256(path), str(path), {"provenance_of_model": kind})


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of an exported encoder file (``encoder.pt`` -> ``encoder.json``)."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``path`` when it exists and describes an encoder, else None."""
    import json

    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: unreadable encoder sidecar: {exc}") from None
    needed = ("mpp", "stem_stride", "normalisation")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        return None
    if data["normalisation"] not in NORMALISATIONS:
        raise InputError(f"{side}: unknown normalisation {data['normalisation']!r}")
    return data


def load_encoder(spec: str | None, *, random_seed: int | None = None,
                 torchvision_mpp: float = 0.5, torchvision_stem: int = 2,
                 torchvision_normalisation: str = "imagenet") -> Encoder:
    """The encoder of ``spec``: a registry name, a cerberus-cli or original-release
    checkpoint, or a plain state dict file of a registered encoder kind.

    ``random_seed`` replaces a Cerberus model's weights by a seeded random initialisation
    of the same architecture. ``torchvision_*`` describe a plain state dict, which does
    not say at which resolution, stem stride and normalisation it was trained.
    """
    if spec is not None and Path(spec).is_file():
        try:
            obj = torch.load(spec, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the checkpoint loader gives the one-line reason
            obj = None
        if _is_plain_state(_unwrapped(obj)):
            if random_seed is not None:
                raise InputError(f"{spec}: --random-init applies to Cerberus models only")
            sidecar = read_sidecar(spec)
            if sidecar is not None:
                # An encoder written by export-encoder says how it must be fed.
                torchvision_mpp = float(sidecar["mpp"])
                torchvision_stem = int(sidecar["stem_stride"])
                torchvision_normalisation = str(sidecar["normalisation"])
            return load_state_dict_encoder(spec, torchvision_mpp, torchvision_stem,
                                           torchvision_normalisation)
    return _model_encoder(spec, random_seed)
