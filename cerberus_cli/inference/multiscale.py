"""``--save-maps``: the map store as an OME-Zarr 0.5 image for inspection.

``S.maps.zarr`` (Zarr v3) is one multiscale image whose channels are the
instance-head probabilities (``gland inner``, ``gland boundary``, ``lumen inner``,
...; uint8, probability = value / 255), with each type map as a label image
(``labels/nuclei_type``, ``labels/gland_type``: class names and colours). Axes are
in micrometres; level 0 is the model-resolution grid, each further level halves it
(mean for probabilities, nearest for class ids) until the long side is at most
``min_side`` px. The store is padded to whole tiles: the ``cerberus`` attributes
record the valid extent, the um/px and the channel and class lists. Written with
ome-zarr-py, block by block (dask), in bounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dask.array as da

from cerberus_cli.core.vocabulary import TASK_CLASSES, ClassSpec
from cerberus_cli.inference.mapstore import MapStore
from cerberus_cli.outputs import omezarr

#: Names of the two stored channels of an instance head (background is 1 - both).
INSTANCE_CHANNELS = ("inner", "boundary")


def _type_classes(head: str, given: Mapping[str, Sequence[ClassSpec]] | None
                  ) -> Sequence[ClassSpec]:
    """Classes of a type head: as given (the model config's), else by task name."""
    if given and head in given:
        return given[head]
    task = head.removesuffix("_type")
    if task in TASK_CLASSES:
        return TASK_CLASSES[task]
    raise ValueError(f"type map {head!r}: no class list given and no task of that name")


def _channel_color(head: str, channel: str) -> tuple[int, int, int]:
    classes = TASK_CLASSES.get(head, ())
    base = classes[1].color if len(classes) > 1 else (255, 255, 255)
    # Boundaries in a darker shade of the head's colour, so both read apart.
    return base if channel == "inner" else (base[0] // 2, base[1] // 2, base[2] // 2)


def write_multiscale(store: MapStore, path: str | Path, min_side: int = 1024,
                     valid_size: tuple[int, int] | None = None,
                     type_classes: Mapping[str, Sequence[ClassSpec]] | None = None) -> Path:
    """Copy ``store`` into a new OME-Zarr image at ``path``; return ``path``.

    ``valid_size`` is the (width, height) of the map grid before padding to whole
    tiles (default: the whole store); it is recorded as the valid extent.
    ``type_classes`` names the classes of each type head (default: the Cerberus
    classes of the head's task, e.g. ``nuclei_type`` -> nucleus types).
    """
    width, height = valid_size if valid_size is not None else (store.width, store.height)
    levels = omezarr.level_count(store.height, store.width, min_side)
    group = omezarr.open_store(path)
    heads = list(store.instance_heads)
    channels = [(f"{h} {c}", _channel_color(h, c)) for h in heads for c in INSTANCE_CHANNELS]
    if heads:
        probs = da.concatenate([da.from_zarr(store.group[f"prob/{h}"]) for h in heads], axis=0)
    else:  # a model with type heads only still gets an image for its labels
        probs = da.zeros((1, store.height, store.width), dtype="uint8", chunks=(1, 1024, 1024))
        channels = [("empty", (0, 0, 0))]
    omezarr.write_image(group, omezarr.mean_pyramid(probs, levels), store.mpp, "probabilities",
                        channels=channels, attrs={
                            "mpp": store.mpp,
                            "probability_scale": 1 / 255,
                            "channels": [name for name, _ in channels],
                            "valid_extent": omezarr.valid_extent(height, width, store.mpp),
                            "type_maps": {h: omezarr.class_table(_type_classes(h, type_classes))
                                          for h in store.type_heads},
                        })
    for head in store.type_heads:
        ids = da.from_zarr(store.group[f"type/{head}"])
        omezarr.write_labels(group, head, omezarr.nearest_pyramid(ids, levels), store.mpp,
                             _type_classes(head, type_classes))
    return Path(path)
