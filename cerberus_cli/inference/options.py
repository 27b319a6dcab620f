"""The typed options of a segmentation run: one object, shared by CLI and library."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from cerberus_cli.inference.tiles import DEFAULT_MARGIN, DEFAULT_TILE


@dataclass(frozen=True)
class SegmentOptions:
    """Options of ``cerberus segment`` (and :func:`cerberus_cli.segment.segment`).

    Geometry is in pixels at the model resolution: ``tile`` is the kept output side,
    ``margin`` the context the network sees around it (input = tile + 2 * margin),
    ``chunk`` the side of a post-processing chunk.
    """

    model: str | None = None
    tile: int = DEFAULT_TILE
    margin: int = DEFAULT_MARGIN
    batch_size: int = 4
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    workers: int = 2
    post_workers: int = 2
    chunk: int = 2048
    backend: Literal["auto", "openslide", "tiffslide"] = "auto"
    mpp: float | None = None
    mask: str | None = None
    format: Literal["parquet", "geojson"] = "parquet"
    gzip: bool = False
    tissue_polygons: bool = False
    save_maps: bool = False
    overlay: bool = True
    overwrite: bool = False
    fail_fast: bool = False

    def __post_init__(self) -> None:
        for name in ("tile", "batch_size", "chunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if self.margin < 0 or self.workers < 0 or self.post_workers < 0:
            raise ValueError("--margin, --workers and --post-workers must be >= 0")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}")
        if self.format not in ("parquet", "geojson"):
            raise ValueError(f"unknown format {self.format!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
