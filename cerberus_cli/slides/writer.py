"""Write pyramidal whole-slide TIFF files that OpenSlide, tiffslide and QuPath open.

Three layouts:

``svs``
    Aperio SVS: tiled level 0 with an Aperio ImageDescription (``MPP``,
    ``AppMag``), a stripped thumbnail as the second directory, the reduced levels,
    then optional ``label`` / ``macro`` images.
``tiff``
    Generic pyramidal TIFF: tiled levels in the main directory chain, reduced
    levels flagged ``NewSubfileType=1``, the resolution in TIFF resolution tags
    (pixels per centimetre).
``ome``
    OME-TIFF: level 0 in the main chain, reduced levels in SubIFDs, the pixel size
    in the OME-XML ``PhysicalSizeX/Y`` (micrometres).

Used to export images as slides and to build test and benchmark slides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import tifffile

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError

SlideLayout = Literal["svs", "tiff", "ome"]

_APERIO_HEADER = "Aperio Image Library v12.0.15"
# Rows resampled at a time when building reduced levels, to bound memory.
_BAND_ROWS = 4096


def pyramid_sizes(width: int, height: int, downsamples: Sequence[int]) -> list[tuple[int, int]]:
    """Level sizes (w, h) for integer ``downsamples`` (floor, at least one pixel)."""
    return [(max(1, width // d), max(1, height // d)) for d in downsamples]


def _downsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average ``image`` to ``size`` (w, h), band by band for large inputs."""
    w, h = size
    src_h = image.shape[0]
    if src_h <= _BAND_ROWS:
        return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    out = np.empty((h, w, 3), np.uint8)
    # Bands of whole output rows; an integer ratio keeps every band exact.
    ratio = src_h / h
    step = max(1, int(_BAND_ROWS / ratio))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        s0, s1 = int(round(r0 * ratio)), min(src_h, int(round(r1 * ratio)))
        band = np.ascontiguousarray(image[s0:s1])
        out[r0:r1] = cv2.resize(band, (w, r1 - r0), interpolation=cv2.INTER_AREA)
    return out


def write_slide(
    path: str | os.PathLike,
    image: np.ndarray,
    mpp: float | None,
    *,
    layout: SlideLayout = "svs",
    compression: str = "jpeg",
    quality: int = 90,
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4, 16),
    objective_power: float | None = None,
    associated: dict[str, np.ndarray] | None = None,
    thumbnail_px: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write ``image`` (H, W, 3 uint8; may be a ``np.memmap``) as a pyramidal slide.

    ``mpp`` is the level-0 pixel size in micrometres (``None`` writes no
    resolution at all). ``downsamples`` are the integer factors of the levels,
    starting with 1. ``compression`` is any tifffile codec name (``jpeg``,
    ``zlib``, ``lzw``, ``jpeg2000``, ``none``). ``associated`` maps names
    (``label``, ``macro``) to RGB images; they are written for ``svs`` only. The
    file is written under a temporary name and renamed when complete; an existing
    file is only replaced with ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists (refusing to overwrite)")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if list(downsamples)[:1] != [1]:
        raise ValueError("downsamples must start with 1")
    height, width = image.shape[:2]
    sizes = pyramid_sizes(width, height, downsamples)
    comp = None if compression == "none" else compression
    compressionargs = {"level": quality} if comp in ("jpeg", "jpeg2000", "webp") else None
    tile_kw = dict(
        tile=(tile, tile),
        compression=comp,
        compressionargs=compressionargs,
        photometric="rgb",
    )
    target = AtomicPath(path, overwrite=overwrite)
    try:
        with tifffile.TiffWriter(target.tmp, bigtiff=width * height * 3 > 2**31,
                                 ome=layout == "ome") as tw:
            if layout == "svs":
                _write_svs(tw, image, mpp, sizes, tile_kw, objective_power, associated, thumbnail_px)
            elif layout == "tiff":
                _write_generic(tw, image, mpp, sizes, tile_kw)
            elif layout == "ome":
                _write_ome(tw, image, mpp, sizes, tile_kw)
            else:
                raise ValueError(f"unknown layout {layout!r} (svs, tiff or ome)")
    except BaseException:
        target.abort()
        raise
    return target.commit()


def _levels(image: np.ndarray, sizes: list[tuple[int, int]]):
    """Yield each pyramid level, each reduced from the one before it."""
    level = image
    yield level
    for size in sizes[1:]:
        level = _downsample(level, size)
        yield level


def _aperio_description(width: int, height: int, tail: str, mpp: float | None,
                        objective_power: float | None, tile: int) -> str:
    fields = [f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) {tail}"]
    if objective_power is not None:
        fields.append(f"AppMag = {objective_power:g}")
    if mpp is not None:
        fields.append(f"MPP = {mpp:.4f}")
    return f"{_APERIO_HEADER}\r\n" + "|".join(fields)


def _write_svs(tw, image, mpp, sizes, tile_kw, objective_power, associated, thumbnail_px):
    levels = _levels(image, sizes)
    level0 = next(levels)
    write_svs_pages(tw, level0, sizes[0], list(levels), mpp, tile_kw=tile_kw,
                    objective_power=objective_power, associated=associated,
                    thumbnail_px=thumbnail_px)


def write_svs_pages(tw: tifffile.TiffWriter, level0: np.ndarray | Iterator[np.ndarray],
                    size: tuple[int, int], reduced: Sequence[np.ndarray], mpp: float | None, *,
                    tile_kw: dict[str, Any], objective_power: float | None = None,
                    associated: dict[str, np.ndarray] | None = None, thumbnail_px: int = 1024,
                    extra_fields: Sequence[str] = (), thumbnail_from: np.ndarray | None = None) -> None:
    """The pages of an Aperio SVS, in the order Aperio readers expect.

    ``level0`` is the full image, or an iterator of its tiles (row-major, as
    tifffile takes them) for slides too large to hold; ``reduced`` are the smaller
    levels. Then a stripped thumbnail as the second page, the reduced levels, and
    the ``label``/``macro`` images. ``extra_fields`` are appended to the level-0
    description (``Key = value``); ``thumbnail_from`` is an image to reduce to the
    thumbnail when neither level 0 (tiles) nor a reduced level can serve.
    """
    width, height = size
    tile = tile_kw["tile"][0]
    codec = str(tile_kw["compression"] or "none").upper()
    desc0 = _aperio_description(width, height, f"{codec}/RGB", mpp, objective_power, tile)
    tiled: dict[str, Any] = {} if isinstance(level0, np.ndarray) else {"shape": (height, width, 3), "dtype": np.uint8}
    tw.write(level0, description="|".join([desc0, *extra_fields]), metadata=None, **tiled,
             **tile_kw)
    # Aperio readers expect a stripped thumbnail as the second directory.
    scale = min(1.0, thumbnail_px / max(width, height))
    tsize = (max(1, round(width * scale)), max(1, round(height * scale)))
    source = next((lv for lv in reversed(reduced) if lv.shape[1] >= tsize[0]), None)
    if source is None:
        source = level0 if isinstance(level0, np.ndarray) else thumbnail_from
    if source is None:
        raise ValueError("a tiled level 0 without reduced levels needs thumbnail_from")
    thumb = _downsample(source, tsize)
    tw.write(
        thumb,
        description=f"{_APERIO_HEADER}\r\n{width}x{height} -> {tsize[0]}x{tsize[1]} - |",
        metadata=None,
        photometric="rgb",
        compression="jpeg",
    )
    for level in reduced:
        lh, lw = level.shape[:2]
        tw.write(
            level,
            description=_aperio_description(lw, lh, f"{codec}/RGB", mpp, objective_power, tile),
            metadata=None,
            **tile_kw,
        )
    for name, img in (associated or {}).items():
        h, w = img.shape[:2]
        # OpenSlide takes the associated image's name from the second line.
        tw.write(
            np.ascontiguousarray(img),
            description=f"{_APERIO_HEADER}\n{name} {w}x{h}",
            metadata=None,
            photometric="rgb",
            compression="lzw" if name == "label" else "jpeg",
            subfiletype=1 if name == "label" else 9,
        )


def _resolution_kw(mpp: float | None) -> dict:
    if mpp is None:
        return {}
    ppcm = 1e4 / mpp
    return {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}


def _write_generic(tw, image, mpp, sizes, tile_kw):
    for i, level in enumerate(_levels(image, sizes)):
        lw, lh = sizes[i]
        ds = sizes[0][0] / lw
        tw.write(
            level,
            metadata=None,
            subfiletype=1 if i else 0,
            **_resolution_kw(None if mpp is None else mpp * ds),
            **tile_kw,
        )


def _write_ome(tw, image, mpp, sizes, tile_kw):
    meta = {"axes": "YXS"}
    if mpp is not None:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    levels = _levels(image, sizes)
    tw.write(next(levels), subifds=len(sizes) - 1, metadata=meta, **_resolution_kw(mpp), **tile_kw)
    for i, level in enumerate(levels, start=1):
        ds = sizes[0][0] / sizes[i][0]
        tw.write(level, subfiletype=1, metadata=None,
                 **_resolution_kw(None if mpp is None else mpp * ds), **tile_kw)
