"""Typed model configuration: the one place that says what a Cerberus model is.

A :class:`ModelConfig` names the encoder, the stem stride, the heads (with their
classes and colours), the resolution the model works at and the tile geometry it
was trained for. It round-trips through plain dicts (``to_dict``/``from_dict``) so it
can live inside a checkpoint file and a model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

HeadKind = Literal["instance", "type", "tissue"]

#: Channels of every instance head, in order.
INSTANCE_CHANNELS = ("background", "inner", "boundary")


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its name and display colour (RGB 0..255)."""

    name: str
    color: tuple[int, int, int]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ClassSpec":
        return ClassSpec(str(d["name"]), tuple(int(c) for c in d["color"]))  # type: ignore[arg-type]


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
    def from_dict(d: dict[str, Any]) -> "HeadSpec":
        return HeadSpec(
            name=str(d["name"]),
            kind=d["kind"],
            classes=tuple(ClassSpec.from_dict(c) for c in d["classes"]),
            parent=d.get("parent"),
        )


@dataclass(frozen=True)
class TileGeometry:
    """Tile geometry at the model resolution: input size and kept centre crop."""

    input_px: int = 448
    output_px: int = 144

    @property
    def margin_px(self) -> int:
        return (self.input_px - self.output_px) // 2


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a network and use it on slides."""

    encoder: Literal["resnet18", "resnet34"] = "resnet34"
    stem_stride: int = 1
    heads: tuple[HeadSpec, ...] = ()
    mpp: float = 0.5
    tile: TileGeometry = field(default_factory=TileGeometry)
    tissue_patch_px: int = 144
    name: str = "cerberus"

    def __post_init__(self) -> None:
        if self.encoder not in ("resnet18", "resnet34"):
            raise ValueError(f"unknown encoder {self.encoder!r} (resnet18 or resnet34)")
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
    def from_dict(d: dict[str, Any]) -> "ModelConfig":
        return ModelConfig(
            encoder=d["encoder"],
            stem_stride=int(d["stem_stride"]),
            heads=tuple(HeadSpec.from_dict(h) for h in d["heads"]),
            mpp=float(d["mpp"]),
            tile=TileGeometry(**d.get("tile", {})),
            tissue_patch_px=int(d.get("tissue_patch_px", 144)),
            name=str(d.get("name", "cerberus")),
        )

    def with_heads(self, names: list[str]) -> "ModelConfig":
        """A copy keeping only the named heads (type heads need their parent)."""
        keep = tuple(h for h in self.heads if h.name in names)
        return replace(self, heads=keep)


# --- the Cerberus classes ------------------------------------------------------------

def _classes(*items: tuple[str, tuple[int, int, int]]) -> tuple[ClassSpec, ...]:
    return tuple(ClassSpec(n, c) for n, c in items)


INSTANCE_CLASSES = _classes(
    ("background", (0, 0, 0)), ("inner", (255, 255, 255)), ("boundary", (128, 128, 128))
)
NUCLEUS_TYPES = _classes(
    ("no-label", (128, 128, 128)),
    ("neutrophil", (0, 255, 255)),
    ("epithelial", (255, 0, 0)),
    ("lymphocyte", (0, 0, 255)),
    ("plasma", (0, 128, 0)),
    ("eosinophil", (255, 0, 255)),
    ("connective", (255, 165, 0)),
)
GLAND_TYPES = _classes(
    ("no-label", (128, 128, 128)),
    ("gland", (0, 200, 0)),
    ("surface epithelium", (255, 200, 0)),
)
TISSUE_TYPES = _classes(
    ("background", (255, 255, 255)),
    ("abnormal epithelium", (200, 0, 0)),
    ("normal epithelium", (0, 160, 0)),
    ("inflammatory", (70, 70, 255)),
    ("muscle", (160, 60, 160)),
    ("stroma", (255, 170, 200)),
    ("debris", (120, 80, 40)),
    ("mucous", (100, 220, 220)),
    ("adipose", (255, 240, 140)),
)

#: Classes of objects of instance heads without a type head (lumina): id 1 = the object.
LUMEN_CLASSES = _classes(("no-label", (128, 128, 128)), ("lumen", (0, 170, 255)))

#: Kather-100K / NCT-CRC-HE folder names -> index into TISSUE_TYPES.
KATHER_TO_TISSUE = {
    "BACK": 0, "TUM": 1, "NORM": 2, "LYM": 3, "MUS": 4, "STR": 5, "DEB": 6, "MUC": 7, "ADI": 8,
}


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
