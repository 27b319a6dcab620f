"""Typed model configuration: the one place that says what a Cerberus model is.

A :class:`ModelConfig` names the encoder, the stem stride, the heads (with their
classes and colours) and the resolution the model works at. It round-trips through
plain dicts (``to_dict``/``from_dict``) so it can live inside a checkpoint file and a
model card. The tile geometry is an inference option (``SegmentOptions.tile`` and
``margin``); the ``tile`` entry older checkpoints carry is ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from cerberus_cli.core.vocabulary import (
    GLAND_TYPES,
    INSTANCE_CLASSES,
    NUCLEUS_TYPES,
    TISSUE_TYPES,
    ClassSpec,
)

HeadKind = Literal["instance", "type", "tissue"]

#: Channels of every instance head, in order.
INSTANCE_CHANNELS = ("background", "inner", "boundary")


@dataclass(frozen=True)
class HeadSpec:
    """One output head.

    ``kind`` is ``instance`` (3 channels: background, eroded inner, boundary),
    ``type`` (per-pixel class of the objects of the instance head named by
    ``parent``) or ``tissue`` (patch-level tissue classification from the deepest
    encoder features). Instance and type heads each own a U-Net decoder.
    """

    name: str
    kind: HeadKind
    classes: tuple[ClassSpec, ...]
    parent: str | None = None

    @property
    def channels(self) -> int:
        return len(self.classes)

    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HeadSpec:
        return HeadSpec(
            name=str(d["name"]),
            kind=d["kind"],
            classes=tuple(ClassSpec.from_dict(c) for c in d["classes"]),
            parent=d.get("parent"),
        )


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a network and use it on slides."""

    encoder: Literal["resnet18", "resnet34", "resnet50"] = "resnet34"
    stem_stride: int = 1
    heads: tuple[HeadSpec, ...] = ()
    mpp: float = 0.5
    tissue_patch_px: int = 144
    name: str = "cerberus"

    def __post_init__(self) -> None:
        if self.encoder not in ("resnet18", "resnet34", "resnet50"):
            raise ValueError(f"unknown encoder {self.encoder!r} (resnet18, resnet34 or resnet50)")
        if self.encoder == "resnet50" and any(h.kind != "tissue" for h in self.heads):
            # The decoders are built for the 512 channels of ResNet18/34.
            raise ValueError("resnet50 models carry no segmentation heads (transfer learning only)")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate head names in {names}")
        for h in self.heads:
            if h.kind == "type" and h.parent not in names:
                raise ValueError(f"type head {h.name!r} needs an instance head as parent")
            if h.kind == "instance" and h.channels != len(INSTANCE_CHANNELS):
                raise ValueError(f"instance head {h.name!r} must have 3 classes")

    # --- derived -----------------------------------------------------------------
    @property
    def total_stride(self) -> int:
        """Down-sampling of the deepest encoder features relative to the input."""
        return 16 * self.stem_stride

    @property
    def tissue_crop(self) -> int:
        """Side (in deepest-feature cells) of the centre crop the tissue head pools."""
        return max(1, self.tissue_patch_px // self.total_stride)

    def head(self, name: str) -> HeadSpec:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(name)

    def heads_of_kind(self, kind: HeadKind) -> list[HeadSpec]:
        return [h for h in self.heads if h.kind == kind]

    def type_head_for(self, instance_head: str) -> HeadSpec | None:
        for h in self.heads:
            if h.kind == "type" and h.parent == instance_head:
                return h
        return None

    @property
    def tasks(self) -> list[str]:
        """Task names: instance heads plus ``tissue`` when present."""
        return [h.name for h in self.heads if h.kind in ("instance", "tissue")]

    # --- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = [
            {"name": h.name, "kind": h.kind, "parent": h.parent,
             "classes": [{"name": c.name, "color": list(c.color)} for c in h.classes]}
            for h in self.heads
        ]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelConfig:
        return ModelConfig(
            encoder=d["encoder"],
            stem_stride=int(d["stem_stride"]),
            heads=tuple(HeadSpec.from_dict(h) for h in d["heads"]),
            mpp=float(d["mpp"]),
            tissue_patch_px=int(d.get("tissue_patch_px", 144)),
            name=str(d.get("name", "cerberus")),
        )

    def with_heads(self, names: list[str]) -> ModelConfig:
        """A copy keeping only the named heads (type heads need their parent)."""
        keep = tuple(h for h in self.heads if h.name in names)
        return replace(self, heads=keep)


def cerberus_heads() -> tuple[HeadSpec, ...]:
    """The six heads of the reference Cerberus model."""
    return (
        HeadSpec("gland", "instance", INSTANCE_CLASSES),
        HeadSpec("gland_type", "type", GLAND_TYPES, parent="gland"),
        HeadSpec("lumen", "instance", INSTANCE_CLASSES),
        HeadSpec("nuclei", "instance", INSTANCE_CLASSES),
        HeadSpec("nuclei_type", "type", NUCLEUS_TYPES, parent="nuclei"),
        HeadSpec("tissue", "tissue", TISSUE_TYPES),
    )


def reference_config() -> ModelConfig:
    """The configuration of the original Cerberus release (ResNet34, stem stride 1)."""
    return ModelConfig(encoder="resnet34", stem_stride=1, heads=cerberus_heads(),
                       name="cerberus-reference")


def light_config() -> ModelConfig:
    """A lighter model (ResNet18, stem stride 2) with the same heads, for CPU demos."""
    return ModelConfig(encoder="resnet18", stem_stride=2, heads=cerberus_heads(),
                       name="cerberus-light")
