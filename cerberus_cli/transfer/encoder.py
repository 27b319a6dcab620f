"""The encoder as a feature extractor: which levels exist, how to load one, how to run it.

An :class:`Encoder` is the ResNet trunk of a Cerberus model (plus its 1x1 bridge when the
model has decoders), or a plain torchvision-layout ResNet18/34/50 state dict (ImageNet or
another encoder; also the release checkpoints of Mormont et al.'s multitask-dipath, whose
keys are ``features.*`` for the trunk and ``heads.*`` for the task heads), or a seeded
random initialisation of a model's architecture (a baseline).
It maps uint8 RGB batches to the feature maps of the requested levels.
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
from cerberus_cli.model.encoder import CHANNELS, LAYERS, ResNetEncoder, encoder_channels

#: Levels features can come from, shallowest first; ``bridge`` is the 1x1 conv (512->256)
#: every decoder reads.
LEVELS = ("stem", "layer1", "layer2", "layer3", "layer4", "bridge")
LEVEL_CHANNELS = dict(zip(LEVELS, (*CHANNELS, 256)))


def level_channels(arch: str) -> dict[str, int]:
    """Channels of every level of encoder ``arch`` (``bridge``: the Cerberus 1x1 conv)."""
    return dict(zip(LEVELS, (*encoder_channels(arch), 256)))

#: Down-sampling of each level relative to a stride-1 stem.
LEVEL_SCALE = {"stem": 1, "layer1": 2, "layer2": 4, "layer3": 8, "layer4": 16, "bridge": 16}
DEFAULT_LAYERS = ("layer2", "layer3", "layer4")
#: Input normalisations: our models see RGB/255; torchvision ImageNet encoders also
#: subtract the ImageNet mean and divide by its standard deviation.
NORMALISATIONS = {
    "rgb/255": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class Encoder:
    """A ResNet trunk ready to produce feature maps, with where it came from."""

    trunk: ResNetEncoder
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
        return level_channels(self.arch)

    def levels(self) -> tuple[str, ...]:
        """Levels this encoder can give (``bridge`` only for Cerberus models with decoders)."""
        return LEVELS if self.bridge is not None else LEVELS[:-1]

    def stride(self, level: str) -> int:
        """Input pixels per feature cell of ``level``."""
        return LEVEL_SCALE[level] * self.stem_stride

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
        feats = dict(zip(LEVELS[:-1], self.trunk(x)))
        if "bridge" in layers:
            feats["bridge"] = self.bridge(feats["layer4"])  # type: ignore[misc]
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


def _is_torchvision_state(obj: Any) -> bool:
    return isinstance(obj, dict) and any(
        isinstance(k, str) and k.removeprefix("module.").removeprefix("features.") == "conv1.weight"
        for k in obj)


def _is_mtdp_state(obj: Any) -> bool:
    """Keys of a multitask-dipath release checkpoint: ``features.*`` (+ ``heads.*``)."""
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and k.removeprefix("module.").startswith(("features.", "heads."))
        for k in obj) and any(isinstance(k, str) and "features." in k for k in obj)


def resnet_arch(state: dict[str, Any]) -> str | None:
    """resnet18, resnet34 or resnet50 from the block layout of a torchvision-style state
    dict (fc and heads already removed), or None when it is none of them."""
    bottleneck = "layer1.0.conv3.weight" in state
    counts = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")})
                   for i in range(1, 5))
    for arch, blocks in LAYERS.items():
        if blocks == counts and bottleneck == (arch == "resnet50"):
            return arch
    return None


def load_torchvision_encoder(path: str | os.PathLike, mpp: float, stem_stride: int = 2,
                             normalisation: str = "imagenet") -> Encoder:
    """A torchvision-layout ResNet18/34/50 state dict file as an :class:`Encoder`.

    ``module.`` and ``features.`` prefixes (DataParallel, Mormont et al.'s multitask-dipath
    release) are stripped and ``fc.*`` / ``heads.*`` ignored; every other tensor must
    match exactly (names and shapes).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable state dict: {first_line(exc)}") from None
    if isinstance(obj, dict) and "state_dict" in obj and _is_torchvision_state(obj["state_dict"]):
        obj = obj["state_dict"]
    mtdp = _is_mtdp_state(obj)
    if mtdp and not _is_torchvision_state(obj):
        raise CheckpointError(f"{path}: a multitask-dipath checkpoint of a non-ResNet encoder "
                              "(e.g. densenet121); only its ResNet checkpoints load")
    if not _is_torchvision_state(obj):
        raise CheckpointError(f"{path}: not a torchvision ResNet state dict (no conv1.weight)")
    state = {}
    for k, v in obj.items():
        k = k.removeprefix("module.").removeprefix("features.")
        if not k.startswith(("fc.", "heads.")):
            state[k] = v
    arch = resnet_arch(state)
    if arch is None:
        raise CheckpointError(f"{path}: not a ResNet18/34/50 state dict (its blocks match none)")
    trunk = ResNetEncoder(arch, stem_stride)
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        found = re.search(r"size mismatch for [\w.]+", str(exc))
        raise CheckpointError(f"{path}: not a {arch} state dict "
                              f"({found.group(0) if found else first_line(exc)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: not a {arch} state dict (missing "
                              f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    kind = "multitask-dipath release checkpoint" if mtdp else "torchvision state dict"
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
    checkpoint, or a torchvision-layout ResNet state dict file.

    ``random_seed`` replaces a Cerberus model's weights by a seeded random initialisation
    of the same architecture. ``torchvision_*`` describe a plain state dict, which does
    not say at which resolution, stem stride and normalisation it was trained.
    """
    if spec is not None and Path(spec).is_file():
        try:
            obj = torch.load(spec, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the checkpoint loader gives the one-line reason
            obj = None
        if _is_torchvision_state(obj) or _is_mtdp_state(obj) or (isinstance(obj, dict) and "state_dict" in obj
                                         and _is_torchvision_state(obj["state_dict"])
                                         and "format" not in obj):
            if random_seed is not None:
                raise InputError(f"{spec}: --random-init applies to Cerberus models only")
            sidecar = read_sidecar(spec)
            if sidecar is not None:
                # An encoder written by export-encoder says how it must be fed.
                torchvision_mpp = float(sidecar["mpp"])
                torchvision_stem = int(sidecar["stem_stride"])
                torchvision_normalisation = str(sidecar["normalisation"])
            return load_torchvision_encoder(spec, torchvision_mpp, torchvision_stem,
                                            torchvision_normalisation)
    return _model_encoder(spec, random_seed)
