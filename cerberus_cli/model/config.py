"""Typed model configuration: the one place that says what a Cerberus model is.

A :class:`ModelConfig` names the encoder (one of
:func:`~cerberus_cli.model.encoder.encoder_names`), the stem stride, the heads (with their
classes and colours) and the resolution the model works at. It round-trips through
plain dicts (``to_dict``/``from_dict``) so it can live inside a checkpoint file and a
model card. The tile geometry is an inference option (``SegmentOptions.tile`` and
``margin``); the ``tile`` entry older checkpoints carry is ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from cerberus_cli.core.vocabulary import (
    GLAND_TYPES,
    INSTANCE_CLASSES,
    NUCLEUS_TYPES,
    TISSUE_TYPES,
    ClassSpec,
)

if TYPE_CHECKING:
    from cerberus_cli.model.encoder_protocol import EncoderGeometry

HeadKind = Literal["instance", "type", "tissue"]

#: Channels of every instance head, in order.
INSTANCE_CHANNELS = ("background", "inner", "boundary")
#: (in, mid, out) channels of the four U-Net decoder levels, deepest first. Level k adds
#: (ADD, not concatenation) the skip of encoder level 3 - k, so an encoder can carry
#: decoders only when its five levels start with :data:`SKIP_CHANNELS` channels.
DECODER_LEVELS = ((256, 256, 128), (128, 128, 64), (64, 64, 64), (64, 64, 64))
SKIP_CHANNELS = tuple(cin for cin, _, _ in reversed(DECODER_LEVELS))


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

    encoder: str = "resnet34"
    stem_stride: int = 1
    heads: tuple[HeadSpec, ...] = ()
    mpp: float = 0.5
    tissue_patch_px: int = 144
    name: str = "cerberus"
    #: Post-processing settings these weights were calibrated with (name, value pairs of
    #: ``PostprocessOptions`` fields, sorted); they replace the reference values of
    #: those settings unless a user sets them. Empty: the reference values throughout.
    postprocess: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        geometry = self.geometry  # raises ValueError for an encoder no kind builds
        if any(h.kind != "tissue" for h in self.heads) and (
                len(geometry.levels) != len(SKIP_CHANNELS) + 1
                or geometry.channels[:len(SKIP_CHANNELS)] != SKIP_CHANNELS):
            raise ValueError(f"{self.encoder} models carry no segmentation heads (the decoders "
                             f"add skips of {', '.join(map(str, SKIP_CHANNELS))} channels and "
                             f"one deeper level; its levels have {geometry.channels})")
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
    def geometry(self) -> EncoderGeometry:
        """Levels, strides and channels of the encoder."""
        # Late: the registry imports torch; postprocess reads configs without it.
        from cerberus_cli.model.encoder import encoder_geometry

        return encoder_geometry(self.encoder, self.stem_stride)

    @property
    def total_stride(self) -> int:
        """Down-sampling of the deepest encoder features relative to the input."""
        return self.geometry.strides[-1]

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
        # Kept out when empty, so configs without a calibration stay as they were.
        if self.postprocess:
            d["postprocess"] = dict(self.postprocess)
        else:
            del d["postprocess"]
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
            postprocess=tuple(sorted(d.get("postprocess", {}).items())),
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
