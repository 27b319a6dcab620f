"""One record per detected object: the unit every writer and reader exchanges.

Geometries are in level-0 pixel coordinates of the slide (x right, y down);
measurements are in micrometres using the slide's level-0 microns-per-pixel.
"""

from __future__ import annotations

import random
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from cerberus_cli.core.vocabulary import TASKS

#: Namespace of the deterministic object UUIDs (uuid5) of cerberus-cli.
OBJECT_NAMESPACE = uuid_mod.UUID("6f3c1f7e-5b1a-5d2e-9c44-2b8f0c1d7a10")


@dataclass(frozen=True)
class ObjectRecord:
    """One object (nucleus, gland, lumen or tissue region) as written to disk.

    ``geometry`` is a shapely Polygon or MultiPolygon in level-0 pixels;
    ``centroid_x``/``centroid_y`` are level-0 pixels; ``area_um2`` and
    ``perimeter_um`` use the slide's level-0 mpp. ``probability`` is the type
    vote share (1.0 for ground truth). ``parent_uuid`` links a lumen to its gland.
    """

    uuid: str
    task: str
    class_id: int
    class_name: str
    probability: float
    geometry: BaseGeometry
    centroid_x: float
    centroid_y: float
    area_um2: float
    perimeter_um: float
    parent_uuid: str | None = None


def object_uuid(task: str, x: float, y: float, key: str = "") -> str:
    """A deterministic UUID (version 5) for an object of ``task`` at level-0 (x, y).

    The centroid is rounded to 0.1 px so the same object found again in a rerun
    (same maps, same post-processing) gets the same id; ``key`` (e.g. the slide
    name) keeps ids of different slides apart.
    """
    name = f"{key}|{task}|{round(float(x), 1):.1f}|{round(float(y), 1):.1f}"
    return str(uuid_mod.uuid5(OBJECT_NAMESPACE, name))


def random_uuid(rng: random.Random | None = None) -> str:
    """A version-4 UUID string; reproducible when a seeded ``rng`` is given."""
    if rng is None:
        return str(uuid_mod.uuid4())
    return str(uuid_mod.UUID(int=rng.getrandbits(128), version=4))


def make_record(
    geometry: BaseGeometry,
    task: str,
    class_id: int,
    class_name: str,
    probability: float,
    mpp: float,
    parent_uuid: str | None = None,
    uuid: str | uuid_mod.UUID | random.Random | None = None,
) -> ObjectRecord:
    """Build an :class:`ObjectRecord` from a level-0-pixel polygon.

    Computes the centroid (level-0 px), area (um^2 = px^2 * mpp^2) and perimeter
    (um = px * mpp; holes included) from ``geometry``. ``uuid`` may be a UUID
    (string or object) to use as is, a seeded :class:`random.Random` for
    reproducible version-4 ids (ground truth), or None for a fresh uuid4.

    Raises:
        ValueError: unknown task, non-positive mpp, or a geometry that is not a
            non-empty Polygon/MultiPolygon.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if not isinstance(geometry, (Polygon, MultiPolygon)) or geometry.is_empty:
        raise ValueError(f"geometry must be a non-empty Polygon or MultiPolygon, got "
                         f"{geometry.geom_type if geometry is not None else None}")
    if isinstance(uuid, random.Random):
        uid = random_uuid(uuid)
    elif uuid is None:
        uid = random_uuid()
    else:
        uid = str(uuid_mod.UUID(str(uuid)))
    c = geometry.centroid
    return ObjectRecord(
        uuid=uid,
        task=task,
        class_id=int(class_id),
        class_name=str(class_name),
        probability=float(probability),
        geometry=geometry,
        centroid_x=float(c.x),
        centroid_y=float(c.y),
        area_um2=float(shapely.area(geometry)) * mpp * mpp,
        perimeter_um=float(shapely.length(geometry)) * mpp,
        parent_uuid=None if parent_uuid is None else str(parent_uuid),
    )


def make_records(
    geometries: Sequence[BaseGeometry],
    task: str,
    class_ids: Sequence[int],
    class_names: Sequence[str],
    probabilities: Sequence[float],
    mpp: float,
    uuids: Sequence[str],
    parent_uuids: Sequence[str | None] | None = None,
) -> list[ObjectRecord]:
    """Many records of one task at once: :func:`make_record` with vectorised measures.

    All sequences have one entry per object; ``uuids`` are used as given.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    n = len(geometries)
    if not n:
        return []
    geoms = np.empty(n, dtype=object)
    geoms[:] = list(geometries)
    kinds = shapely.get_type_id(geoms)
    if not np.isin(kinds, (3, 6)).all() or shapely.is_empty(geoms).any():
        raise ValueError("geometries must be non-empty Polygons or MultiPolygons")
    c = shapely.centroid(geoms)
    cx, cy = shapely.get_x(c), shapely.get_y(c)
    area = shapely.area(geoms) * (mpp * mpp)
    length = shapely.length(geoms) * mpp
    parents = parent_uuids if parent_uuids is not None else [None] * n
    return [
        ObjectRecord(str(uuids[i]), task, int(class_ids[i]), str(class_names[i]),
                     float(probabilities[i]), geoms[i], float(cx[i]), float(cy[i]),
                     float(area[i]), float(length[i]),
                     None if parents[i] is None else str(parents[i]))
        for i in range(n)
    ]
