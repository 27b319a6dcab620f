"""`Slide`: one opened whole-slide image, whatever reader is behind it.

A :class:`Slide` holds the metadata (sizes, levels, mpp, properties) and a
reader handle that is opened lazily in each process: pickling keeps the path,
backend, mpp and metadata, so a Slide can be handed to DataLoader workers
(spawn or fork) and every worker opens its own handle on first use.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cerberus_cli.core.errors import InputError, first_line
from cerberus_cli.core.optionspec import BACKENDS
from cerberus_cli.slides.backends import (
    ArrayBackend,
    Backend,
    ImageBackend,
    OpenSlideBackend,
    TiffSlideBackend,
    TileReadError,
)
from cerberus_cli.slides.resolution import objective_power_from_properties, resolve_mpp
from cerberus_cli.slides.sniff import check_slide_file

log = logging.getLogger(__name__)



def _open_backend(path: Path, name: str, kind: str | None) -> Backend:
    if name == "openslide":
        return OpenSlideBackend(path)
    if name == "tiffslide":
        return TiffSlideBackend(path)
    if name == "image":
        return ImageBackend(path, kind or "")
    raise ValueError(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")


def check_tiff_complete(path: Path) -> None:
    """Raise :class:`InputError` when a TIFF's image data runs past its end.

    A truncated download keeps its header, so readers open it and then fail
    (or return garbage) tile by tile; checking the tile offsets catches it at
    once. Only the offset tables are read, not the pixels.
    """
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(str(path)) as tf:
            end = 0
            for page in tf.pages:
                offsets = np.asarray(page.dataoffsets, np.int64)
                counts = np.asarray(page.databytecounts, np.int64)
                if offsets.size:
                    end = max(end, int((offsets + counts).max()))
    except Exception as exc:
        raise InputError(f"{path}: corrupt or truncated TIFF ({first_line(exc)})") from None
    if end > size:
        raise InputError(
            f"{path}: truncated file: it has {size} bytes but its image data extends to "
            f"byte {end} (incomplete download or copy?)"
        )


class Slide:
    """An opened slide. Use :func:`open_slide` to create one."""

    def __init__(self, path: Path, backend: Backend, kind: str | None, mpp: float,
                 mpp_source: str) -> None:
        self.path = path
        self.backend: str = backend.name
        self._kind = kind
        self.vendor: str = backend.vendor
        self.properties: dict[str, str] = dict(backend.properties)
        self.level_dimensions: tuple[tuple[int, int], ...] = backend.level_dimensions
        self.level_downsamples: tuple[float, ...] = backend.level_downsamples
        self.tile_sizes: tuple[tuple[int, int], ...] = backend.tile_sizes
        self.associated_images: tuple[str, ...] = backend.associated_images
        self.mpp: float = mpp
        self.mpp_source: str = mpp_source
        self.objective_power: float | None = objective_power_from_properties(self.properties)
        self._handle: Backend | None = backend
        self._pid = os.getpid()
        #: Tiles of the file that could not be decoded (read as white), counted per process.
        self.read_failures = 0

    # --- metadata ----------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({str(self.path)!r}, backend={self.backend!r}, {w}x{h}, mpp={self.mpp:.4g})"

    # --- handle, pickling --------------------------------------------------------
    def _reader(self) -> Backend:
        # A handle inherited through fork() shares file state with the parent:
        # open a fresh one in every process.
        if self.backend == "array" and self._handle is not None:
            return self._handle
        if self._handle is None or self._pid != os.getpid():
            self._handle = _open_backend(self.path, self.backend, self._kind)
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.backend != "array":  # an in-memory image travels with the slide
            state["_handle"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        """Close the reader handle (it is reopened if the slide is read again)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pixels ------------------------------------------------------------------
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of a rectangle in *level* pixel coordinates.

        Pixels outside the level read as white. A rectangle entirely outside
        the slide raises :class:`InputError`. Tiles that cannot be decoded read
        as white, with one warning per region.
        """
        if not 0 <= level < self.level_count:
            raise InputError(f"{self.path}: level {level} does not exist (0..{self.level_count - 1})")
        if w <= 0 or h <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {w}x{h}")
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x0 >= x1 or y0 >= y1:
            raise InputError(
                f"{self.path}: region x={x} y={y} w={w} h={h} at level {level} lies outside "
                f"the slide (level size {lw}x{lh})"
            )
        inside = self._read_inside(level, x0, y0, x1 - x0, y1 - y0)
        if (x0, y0, x1, y1) == (x, y, x + w, y + h):
            return inside
        out = np.full((h, w, 3), 255, np.uint8)
        out[y0 - y:y1 - y, x0 - x:x1 - x] = inside
        return out

    def read_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``level`` starting at level-0 pixel (x, y).

        As OpenSlide's ``read_region``, but the region starts at level pixel
        ``floor(x / downsample)`` exactly (no sub-pixel interpolation).
        """
        if not 0 <= level < self.level_count:
            raise InputError(f"{self.path}: level {level} does not exist (0..{self.level_count - 1})")
        ds = self.level_downsamples[level]
        return self.read_level(level, math.floor(x / ds + 1e-9), math.floor(y / ds + 1e-9), w, h)

    def _read_inside(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        reader = self._reader()
        try:
            return reader.read(level, x, y, w, h)
        except TileReadError as exc:
            first_error = first_line(exc)
        # Salvage what can be read: retry tile by tile, white where a tile fails.
        tw, th = self.tile_sizes[level]
        out = np.full((h, w, 3), 255, np.uint8)
        failed = total = 0
        for ty in range((y // th) * th, y + h, th):
            for tx in range((x // tw) * tw, x + w, tw):
                bx0, by0 = max(tx, x), max(ty, y)
                bx1, by1 = min(tx + tw, x + w), min(ty + th, y + h)
                total += 1
                try:
                    out[by0 - y:by1 - y, bx0 - x:bx1 - x] = self._reader().read(
                        level, bx0, by0, bx1 - bx0, by1 - by0)
                except TileReadError:
                    failed += 1
        self.read_failures += failed
        log.warning(
            "%s: %d of %d tiles in region x=%d y=%d w=%d h=%d (level %d) could not be read "
            "and are white (%s)", self.path, failed, total, x, y, w, h, level, first_error,
        )
        return out

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``label``, ``macro``, ``thumbnail``) as RGB uint8."""
        if name not in self.associated_images:
            raise InputError(f"{self.path}: no associated image {name!r} "
                             f"(has: {', '.join(self.associated_images) or 'none'})")
        return self._reader().associated_image(name)


def slide_from_array(image: np.ndarray, mpp: float, name: str = "image") -> Slide:
    """A :class:`Slide` over an image already in memory (H x W [x C], level-0 ``mpp`` um/px)."""
    from cerberus_cli.core.optionspec import check_mpp

    check_mpp(mpp, f"{name}: mpp")
    return Slide(Path(name), ArrayBackend(np.asarray(image)), None, float(mpp), "given")


def open_slide(path: str | os.PathLike, backend: str = "auto", mpp: float | None = None) -> Slide:
    """Open a whole-slide image (or plain PNG/JPEG/TIFF image) for reading.

    ``backend``: ``auto`` (OpenSlide when it opens the file and sees its whole
    pyramid, else tiffslide, else the plain-image reader), ``openslide``,
    ``tiffslide`` or ``image``. ``mpp`` overrides the level-0 pixel size from the
    metadata. Raises :class:`InputError` with a one-line reason when the file
    cannot be used.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    p, kind = check_slide_file(path)
    if kind == "tiff":
        check_tiff_complete(p)
    if backend == "auto":
        order = ["image"] if kind in ("png", "jpeg") else ["openslide", "tiffslide"]
        if kind == "tiff":
            order.append("image")
    else:
        order = [backend]
    errors: list[str] = []
    reader: Backend | None = None
    for name in order:
        try:
            candidate = _open_backend(p, name, kind)
        except Exception as exc:  # each library raises its own types
            errors.append(f"{name}: {first_line(exc)}")
            continue
        if reader is None:
            reader = candidate
        elif len(candidate.level_dimensions) > len(reader.level_dimensions):
            reader.close()  # e.g. OME-TIFF: OpenSlide sees only the base level
            reader = candidate
        else:
            candidate.close()
        # OpenSlide reads a single-level generic TIFF; tiffslide may see the
        # pyramid in SubIFDs, so it gets a look before OpenSlide is accepted.
        single_generic = (reader.name == "openslide" and reader.vendor == "generic-tiff"
                          and len(reader.level_dimensions) == 1)
        if name != "openslide" or not single_generic:
            break
    if reader is None:
        raise InputError(f"{p}: not a readable slide or image ({'; '.join(errors)})")
    try:
        level0 = reader.level_dimensions[0] if reader.level_dimensions else (0, 0)
        if level0[0] <= 0 or level0[1] <= 0:
            raise InputError(f"{p}: the image has no pixels ({level0[0]}x{level0[1]})")
        slide_mpp, source = resolve_mpp(p, reader.properties, mpp)
    except BaseException:
        reader.close()
        raise
    return Slide(p, reader, kind, slide_mpp, source)
