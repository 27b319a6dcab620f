"""OME-Zarr 0.5 (on Zarr v3) images and label images, written with ome-zarr-py.

Every map cerberus-cli writes (probabilities, type maps, the tissue map) is an
OME-Zarr image that napari (napari-ome-zarr), ome-zarr-py, QuPath's OME-Zarr reader
and other NGFF tools open directly: axes in micrometres (``scale`` = um/px of each
level), channel names and colours in ``omero``, class maps as ``labels/<name>``
with one colour and class name per value (``image-label``). What NGFF has no place
for sits beside the ``ome`` key under ``cerberus``: the um/px, the valid extent of
maps padded to whole tiles, and the class list.

Pyramids are lazy (dask), so levels are computed and written block by block in
bounded memory whatever the slide size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import zarr

from cerberus_cli.core.vocabulary import ClassSpec

with warnings.catch_warnings():
    # ome-zarr-py's writer module builds a deprecated default Scaler at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscale, write_multiscale_labels

#: The NGFF version written.
NGFF_VERSION = "0.5"
#: Where cerberus-cli keeps what NGFF has no field for (beside the ``ome`` key).
ATTRS_KEY = "cerberus"
_UNITS = {"y": "micrometer", "x": "micrometer"}
#: NGFF axes; given as dicts, ome-zarr-py also stores them as Zarr v3 dimension names.
_AXES = {"c": {"name": "c", "type": "channel"},
         "y": {"name": "y", "type": "space", "unit": "micrometer"},
         "x": {"name": "x", "type": "space", "unit": "micrometer"}}

log = logging.getLogger(__name__)


def open_store(path: str | Path) -> zarr.Group:
    """A new, empty Zarr v3 group at ``path`` (replacing anything there)."""
    return zarr.open_group(str(path), mode="w", zarr_format=3)


def level_count(height: int, width: int, min_side: int) -> int:
    """Number of pyramid levels: halve until the long side is at most ``min_side``."""
    levels = 1
    while max(height, width) >> (levels - 1) > min_side:
        levels += 1
    return levels


def mean_pyramid(level0: Any, levels: int) -> list[Any]:
    """Levels of a uint8 (..., y, x) array, each the 2x2 mean of the one before."""
    arr = da.asarray(level0)
    out = [arr]
    for _ in range(levels - 1):
        axes = {arr.ndim - 2: 2, arr.ndim - 1: 2}
        arr = da.coarsen(np.mean, arr, axes, trim_excess=True).round().astype(np.uint8)
        out.append(arr)
    return out


def nearest_pyramid(level0: Any, levels: int) -> list[Any]:
    """Levels of a class map, each keeping one pixel of every 2x2 block (no new values)."""
    arr = da.asarray(level0)
    return [arr[..., :: 1 << i, :: 1 << i] for i in range(levels)]


def _chunks(arr: Any, side: int) -> tuple[int, ...]:
    return (1,) * (arr.ndim - 2) + (min(side, max(1, arr.shape[-2])),
                                    min(side, max(1, arr.shape[-1])))


def _hex(color: Sequence[int]) -> str:
    return "".join(f"{int(c):02X}" for c in color[:3])


def write_image(group: zarr.Group, pyramid: list[Any], mpp: float, name: str,
                channels: Sequence[tuple[str, Sequence[int]]] | None = None,
                attrs: dict[str, Any] | None = None, chunk: int = 512) -> None:
    """Write ``pyramid`` (level 0 first, ``(c, y, x)`` or ``(y, x)``) as the image of ``group``.

    ``mpp`` is the um/px of level 0; ``channels`` names and colours the ``c`` axis;
    ``attrs`` go under the ``cerberus`` key of the group attributes.
    """
    with_c = pyramid[0].ndim == 3
    axes = "cyx" if with_c else "yx"
    scale = {"y": float(mpp), "x": float(mpp)} | ({"c": 1.0} if with_c else {})
    metadata: dict[str, Any] = {}
    if with_c and channels:
        metadata["omero"] = {"channels": [
            {"label": label, "color": _hex(color), "active": True,
             "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
            for label, color in channels], "rdefs": {"model": "color"}}
    write_multiscale(pyramid, group, fmt=FormatV05(), axes=[_AXES[a] for a in axes], scale=scale,
                     axes_units=_UNITS, name=name,
                     storage_options={"chunks": _chunks(pyramid[0], chunk)}, metadata=metadata)
    if attrs:
        group.attrs[ATTRS_KEY] = {**cast(dict[str, Any], group.attrs.get(ATTRS_KEY, {})), **attrs}


def write_labels(group: zarr.Group, name: str, pyramid: list[Any], mpp: float,
                 classes: Sequence[ClassSpec], transparent: Sequence[int] = (0,),
                 chunk: int = 512) -> None:
    """Write a class map pyramid as ``labels/<name>`` of the image in ``group``.

    Each class id gets its colour and name (``image-label``); ids in
    ``transparent`` (no-label, background) are drawn fully transparent.
    """
    label_metadata = {
        "colors": [{"label-value": i, "rgba": [*spec.color, 0 if i in transparent else 255]}
                   for i, spec in enumerate(classes)],
        "properties": [{"label-value": i, "class": spec.name} for i, spec in enumerate(classes)],
        "source": {"image": "../../"},
    }
    write_multiscale_labels(pyramid, group, name, fmt=FormatV05(), axes=[_AXES["y"], _AXES["x"]],
                            scale={"y": float(mpp), "x": float(mpp)}, axes_units=_UNITS,
                            storage_options={"chunks": _chunks(pyramid[0], chunk)},
                            label_metadata=label_metadata)
    # NGFF 0.5 wants the version in every "ome" block; ome-zarr-py leaves it out of labels/.
    labels = group["labels"]
    labels.attrs["ome"] = {**cast(dict[str, Any], labels.attrs["ome"]), "version": NGFF_VERSION}


def class_table(classes: Sequence[ClassSpec]) -> list[dict[str, Any]]:
    """The class list as stored in the ``cerberus`` attributes."""
    return [{"id": i, "name": s.name, "color": list(s.color)} for i, s in enumerate(classes)]


def valid_extent(height: int, width: int, mpp: float) -> dict[str, Any]:
    """The part of a (padded) map that holds data, in level-0 map pixels and micrometres."""
    return {"y": [0, int(height)], "x": [0, int(width)],
            "um": {"y": [0.0, height * mpp], "x": [0.0, width * mpp]}}


def level0_path(group: zarr.Group) -> str:
    """Path of the full-resolution array of an OME-Zarr image group."""
    ome = cast(dict[str, Any], group.attrs["ome"])
    return str(ome["multiscales"][0]["datasets"][0]["path"])
