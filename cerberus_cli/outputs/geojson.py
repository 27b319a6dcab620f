"""Streaming QuPath-flavoured GeoJSON writer.

A FeatureCollection is written feature by feature (bounded memory), optionally
gzip-compressed, to a temporary name that is renamed when complete. Feature
layout follows what QuPath imports (File > Import objects / drag and drop):
``id`` a UUID, ``properties.objectType`` ``detection`` (nuclei, lumina) or
``annotation`` (glands, tissue regions), ``properties.classification``
``{"name", "color": [r, g, b]}`` and ``properties.measurements`` ``{name: number}``.
Coordinates are level-0 pixels, which is what QuPath expects for objects.
"""

from __future__ import annotations

import gzip as gzip_mod
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import QUPATH_OBJECT_TYPE, class_color

#: QuPath measurement names (QuPath's own spelling for areas and lengths).
AREA_NAME = "Area µm^2"
PERIMETER_NAME = "Perimeter µm"
PROBABILITY_NAME = "Probability"


def _number(v: float) -> float | None:
    """JSON has no NaN/inf: write them as null."""
    return float(v) if math.isfinite(v) else None


def feature_properties(record: ObjectRecord) -> dict[str, Any]:
    """The ``properties`` of the QuPath Feature of ``record``."""
    props: dict[str, Any] = {
        "objectType": QUPATH_OBJECT_TYPE.get(record.task, "detection"),
        "classification": {
            "name": record.class_name,
            "color": list(class_color(record.task, record.class_id, record.class_name)),
        },
        "measurements": {
            AREA_NAME: _number(record.area_um2),
            PERIMETER_NAME: _number(record.perimeter_um),
            PROBABILITY_NAME: _number(record.probability),
        },
        "task": record.task,
        "class_id": record.class_id,
    }
    if record.parent_uuid is not None:
        props["parent_uuid"] = record.parent_uuid
    return props


class QuPathGeoJSONWriter:
    """Write object records as a QuPath GeoJSON FeatureCollection, streaming.

    ``gzip=True`` compresses the stream (name the file ``*.geojson.gz``). Use as
    a context manager; an exception aborts and leaves no partial file.
    """

    def __init__(self, path: str | os.PathLike, gzip: bool = False,
                 overwrite: bool = False) -> None:
        self._target = AtomicPath(path, overwrite=overwrite)
        self.path = self._target.path
        self.count = 0
        self._fh: IO[str]
        if gzip:
            self._fh = gzip_mod.open(self._target.tmp, "wt", encoding="utf-8", compresslevel=6)
        else:
            self._fh = open(self._target.tmp, "w", encoding="utf-8")
        self._fh.write('{"type": "FeatureCollection", "features": [')

    def write(self, records: Iterable[ObjectRecord]) -> None:
        """Append one batch of records as Features."""
        records = list(records)
        if not records:
            return
        geoms = np.empty(len(records), dtype=object)
        geoms[:] = [r.geometry for r in records]
        geo_json = shapely.to_geojson(geoms)
        parts = []
        for rec, gj in zip(records, geo_json):
            props = json.dumps(feature_properties(rec), ensure_ascii=False)
            parts.append(f'{{"type": "Feature", "id": "{rec.uuid}", '
                         f'"geometry": {gj}, "properties": {props}}}')
        sep = ",\n" if self.count else "\n"
        self._fh.write(sep + ",\n".join(parts))
        self.count += len(records)

    def close(self) -> Path:
        """Finish the FeatureCollection and move the file into place."""
        if self._target.done:
            return self.path
        try:
            self._fh.write("\n]}\n")
            self._fh.close()
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Discard the partial output; ``path`` is left untouched."""
        try:
            self._fh.close()
        except Exception:  # the temp file is removed anyway
            pass
        self._target.abort()

    def __enter__(self) -> "QuPathGeoJSONWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_geojson(path: str | os.PathLike, records: Iterable[ObjectRecord],
                  gzip: bool | None = None, overwrite: bool = False) -> Path:
    """Write ``records`` as QuPath GeoJSON; gzip defaults to a ``.gz`` suffix."""
    if gzip is None:
        gzip = str(path).endswith(".gz")
    with QuPathGeoJSONWriter(path, gzip=gzip, overwrite=overwrite) as writer:
        writer.write(records)
    return writer.path
