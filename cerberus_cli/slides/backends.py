"""The three slide readers behind one small interface.

Every backend reads a rectangle given in *level* pixel coordinates that lies
entirely inside that level, and returns RGB uint8 with transparent pixels
composited on white. Clipping to the slide, white padding and the recovery from
undecodable tiles are done once, in :class:`cerberus_cli.slides.slide.Slide`.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import cv2
import numpy as np

from cerberus_cli.core.errors import InputError

if TYPE_CHECKING:
    import zarr


class TileReadError(Exception):
    """A region could not be decoded (corrupt or missing tile data)."""


class Backend(Protocol):
    """What :class:`~cerberus_cli.slides.slide.Slide` needs from a reader."""

    name: str
    vendor: str
    properties: dict[str, str]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    tile_sizes: tuple[tuple[int, int], ...]
    associated_images: tuple[str, ...]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...

    def associated_image(self, name: str) -> np.ndarray: ...

    def close(self) -> None: ...


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """Any 2-D/3-D image array as contiguous RGB uint8; alpha composited on white."""
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise TileReadError(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    channels = arr.shape[2]
    if channels == 3:
        return np.ascontiguousarray(arr)
    if channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(arr[..., 0]), cv2.COLOR_GRAY2RGB)
    if channels == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:2]], axis=2)
    elif channels != 4:
        raise TileReadError(f"unsupported channel count {channels}")
    alpha = arr[..., 3]
    rgb = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGBA2RGB)
    if alpha.min() == 255:  # the common case: opaque, no arithmetic
        return rgb
    a = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- OpenSlide
def _raw_read_function():
    """openslide-python's ctypes binding of ``openslide_read_region``, if present.

    It is not public API, so the public ``read_region`` stays the fallback.
    """
    try:
        from openslide import lowlevel

        fn = lowlevel._read_region
    except (ImportError, AttributeError):
        return None
    return fn if sys.byteorder == "little" else None


_RAW_READ = _raw_read_function()


class OpenSlideBackend:
    """OpenSlide (C library via ``openslide-python``)."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        self._openslide = openslide
        self._path = path
        self._osr = openslide.OpenSlide(str(path))
        props = dict(self._osr.properties)
        self.properties = props
        self.vendor = props.get("openslide.vendor", "unknown")
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(d[0]), int(d[1])) for d in self._osr.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self._osr.level_downsamples)
        self.tile_sizes: tuple[tuple[int, int], ...] = tuple(
            (int(props.get(f"openslide.level[{i}].tile-width", 256)),
             int(props.get(f"openslide.level[{i}].tile-height", 256)))
            for i in range(len(self.level_dimensions))
        )
        self.associated_images: tuple[str, ...] = tuple(sorted(self._osr.associated_images.keys()))

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        # OpenSlide takes level-0 coordinates; at a non-integer downsample it
        # interpolates the sub-pixel remainder (< 0.5/ds level px here).
        x0, y0 = round(x * ds), round(y * ds)
        try:
            if _RAW_READ is not None:
                return self._read_raw(x0, y0, level, w, h)
            arr = np.asarray(self._osr.read_region((x0, y0), level, (w, h)))
        except self._openslide.OpenSlideError as exc:
            # An OpenSlide handle stays in its error state after a failed
            # read: reopen it so the next region is read normally.
            self._reopen()
            raise TileReadError(str(exc)) from exc
        return to_rgb(arr)

    def _read_raw(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        """Read premultiplied ARGB straight into numpy (no PIL image, no un-premultiply).

        16 % more tiles per second than ``OpenSlide.read_region`` (benchmarks/read.md).
        Compositing premultiplied colour over white is ``c + 255 - alpha``.
        """
        buf = np.empty((h, w), np.uint32)
        _RAW_READ(self._osr._osr, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                  x0, y0, level, w, h)
        bgra = buf.view(np.uint8).reshape(h, w, 4)  # little-endian ARGB words
        rgb = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)
        alpha = bgra[..., 3]
        if alpha.min() < 255:
            rgb = cv2.add(rgb, cv2.cvtColor(255 - alpha, cv2.COLOR_GRAY2RGB))
        return rgb

    def _reopen(self) -> None:
        try:
            self._osr.close()
        finally:
            self._osr = self._openslide.OpenSlide(str(self._path))

    def associated_image(self, name: str) -> np.ndarray:
        return to_rgb(np.asarray(self._osr.associated_images[name]))

    def close(self) -> None:
        self._osr.close()


# --------------------------------------------------------------------------- tiffslide
def _level_tiffslide_class():
    import tiffslide

    class LevelTiffSlide(tiffslide.TiffSlide):
        """TiffSlide whose ``read_region`` location is in level coordinates.

        ``_read_region_loc_transform`` is tiffslide's documented hook for this;
        it avoids the level-0 round trip (tiffslide truncates ``x / ds``).
        """

        def _read_region_loc_transform(self, location, level):
            return location

    return LevelTiffSlide


class TiffSlideBackend:
    """tiffslide (pure Python: tifffile + zarr + imagecodecs)."""

    name = "tiffslide"

    def __init__(self, path: Path) -> None:
        self._ts = _level_tiffslide_class()(str(path))
        props = {k: str(v) for k, v in self._ts.properties.items() if v is not None}
        self.properties = props
        self.vendor = props.get("tiffslide.vendor") or "generic-tiff"
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(d[0]), int(d[1])) for d in self._ts.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self._ts.level_downsamples)
        self.tile_sizes: tuple[tuple[int, int], ...] = tuple(
            (int(props.get(f"tiffslide.level[{i}].tile-width", 256) or 256),
             int(props.get(f"tiffslide.level[{i}].tile-height", 256) or 256))
            for i in range(len(self.level_dimensions))
        )
        self.associated_images: tuple[str, ...] = tuple(sorted(self._ts.associated_images.keys()))

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            arr = self._ts.read_region((x, y), level, (w, h), as_array=True, padding=False)
        except Exception as exc:  # codec errors come as many types
            raise TileReadError(f"{type(exc).__name__}: {exc}") from exc
        return to_rgb(arr)

    def associated_image(self, name: str) -> np.ndarray:
        return to_rgb(np.asarray(self._ts.associated_images[name]))

    def close(self) -> None:
        self._ts.close()


# --------------------------------------------------------------------------- plain images
# Reduced JPEG levels are offered down to this many pixels on the long side.
_MIN_JPEG_LEVEL = 512
_JPEG_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
class ImageBackend:
    """Plain PNG / JPEG / TIFF images: one level, no pyramid.

    TIFF is read region by region through tifffile's zarr view (only the strips
    or tiles touched are decoded). PNG and JPEG cannot be decoded partially; they
    are decoded once, on the first read, and kept for the life of the handle.
    A large JPEG also offers levels at 1/2, 1/4 and 1/8, decoded directly at that
    size by libjpeg's DCT scaling, so its thumbnail never decodes the full image.
    """

    name = "image"

    def __init__(self, path: Path, kind: str) -> None:
        from cerberus_cli.slides.sniff import jpeg_header, png_header

        self._path = path
        self._kind = kind
        self._pixels: dict[int, np.ndarray] = {}
        self._zarr: zarr.Array | None = None
        self.properties: dict[str, str] = {"image.format": kind}
        if kind == "tiff":
            import tifffile
            import zarr

            self._tif = tifffile.TiffFile(str(path))
            series = self._tif.series[0]
            page = series.pages[0]
            if not isinstance(page, tifffile.TiffPage):
                raise TileReadError("TIFF series without a first page")
            if series.axes not in ("YX", "YXS"):
                raise TileReadError(f"unsupported TIFF axes {series.axes}")
            height, width = series.shape[:2]
            # the level-0 store holds one array at its root
            self._zarr = cast("zarr.Array", zarr.open(series.aszarr(level=0), mode="r"))
            tags = page.tags
            if "ResolutionUnit" in tags and "XResolution" in tags:
                unit = int(tags["ResolutionUnit"].value)
                xr = tags["XResolution"].value
                ytag = tags.get("YResolution")
                yr = ytag.value if ytag is not None else xr
                self.properties.update({
                    "tiff.ResolutionUnit": {2: "inch", 3: "centimeter"}.get(unit, "none"),
                    "tiff.XResolution": str(xr[0] / xr[1]) if xr[1] else "0",
                    "tiff.YResolution": str(yr[0] / yr[1]) if yr[1] else "0",
                })
            tile = (page.tilewidth or width, page.tilelength or page.rowsperstrip or height)
        elif kind in ("png", "jpeg"):
            width, height, mpp = (png_header if kind == "png" else jpeg_header)(path)
            if mpp is not None:
                self.properties.update({
                    "tiff.ResolutionUnit": "centimeter",
                    "tiff.XResolution": str(1e4 / mpp),
                    "tiff.YResolution": str(1e4 / mpp),
                })
            tile = (width, height)
        else:
            raise TileReadError(f"not a PNG, JPEG or TIFF image ({kind})")
        self.vendor = kind
        factors = [1]
        if kind == "jpeg":
            factors += [d for d in (2, 4, 8) if max(width, height) // d >= _MIN_JPEG_LEVEL]
        # libjpeg's scaled output is ceil(size / factor)
        sizes = [(-(-int(width) // d), -(-int(height) // d)) for d in factors]
        self._factors = factors
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(sizes)
        # exactly d: level pixel i is the DCT average of level-0 pixels [d*i, d*i + d)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in factors)
        self.tile_sizes: tuple[tuple[int, int], ...] = ((int(tile[0]), int(tile[1])),) + tuple(sizes[1:])
        self.associated_images: tuple[str, ...] = ()

    def _decoded(self, level: int) -> np.ndarray:
        if level not in self._pixels:
            flag = _JPEG_REDUCED[self._factors[level]] if level else cv2.IMREAD_UNCHANGED
            arr = cv2.imread(str(self._path), flag)
            if arr is None:
                # The whole file is one tile: failing it is an input error, not a bad tile.
                raise InputError(
                    f"{self._path}: cannot decode the {self._kind.upper()} image data (corrupt, "
                    f"or over OpenCV's limit of 2^30 pixels per image)")
            if arr.ndim == 3 and arr.shape[2] == 3:
                arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
            elif arr.ndim == 3 and arr.shape[2] == 4:
                arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
            self._pixels[level] = arr
        return self._pixels[level]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            if self._zarr is not None:
                arr = np.asarray(self._zarr[y:y + h, x:x + w])
            else:
                arr = self._decoded(level)[y:y + h, x:x + w]
        except (TileReadError, InputError):
            raise
        except Exception as exc:
            raise TileReadError(f"{type(exc).__name__}: {exc}") from exc
        return to_rgb(arr)

    def associated_image(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def close(self) -> None:
        if self._kind == "tiff":
            self._tif.close()
        self._pixels = {}


class ArrayBackend:
    """An RGB(A) or grey image already in memory: one level, read by slicing."""

    name = "array"
    vendor = "array"

    def __init__(self, image: np.ndarray) -> None:
        if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"image array must be (H, W) or (H, W, C) with pixels, got shape {image.shape}")
        self._image = image
        height, width = image.shape[:2]
        self.properties: dict[str, str] = {}
        self.level_dimensions: tuple[tuple[int, int], ...] = ((int(width), int(height)),)
        self.level_downsamples: tuple[float, ...] = (1.0,)
        self.tile_sizes: tuple[tuple[int, int], ...] = ((int(width), int(height)),)
        self.associated_images: tuple[str, ...] = ()

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return to_rgb(self._image[y:y + h, x:x + w])

    def associated_image(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def close(self) -> None:
        """Nothing to release: the array belongs to the caller."""
