"""Streaming QuPath GeoJSON writer.

A FeatureCollection is written feature by feature (bounded memory), optionally
gzip-compressed, to a temporary name that is renamed when complete. The layout is
what QuPath (0.5 and later) imports without losing anything:

* ``id``: the object's UUID (QuPath keeps it as the object ID);
* ``properties.objectType``: ``detection`` (nuclei, lumina) or ``annotation``
  (glands, tissue regions): QuPath copes with millions of detections, not of
  annotations;
* ``properties.classification``: ``{"name", "color": [r, g, b]}``; absent for
  untyped (``no-label``) objects, which QuPath shows as unclassified;
* ``properties.measurements``: ``{name: number}``, with NaN and infinities written
  as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` as QuPath writes them
  (JSON has no such numbers; ``null`` would be dropped with a warning);
* ``properties.metadata``: our own fields (``task``, ``class_id``, ``class_name``,
  ``probability``, ``parent_uuid``) as strings, the only form QuPath keeps;
* ``properties.childObjects``: with ``lumina="nested"`` a gland carries its lumina,
  so QuPath's hierarchy shows each lumen inside its gland;
* with ``nuclei_as="cell"`` a nucleus is a QuPath cell: ``objectType`` ``cell``,
  ``geometry`` the cell boundary (the nucleus grown by ``cell_expansion_um``, cut half
  way to its neighbours: :mod:`.cells`), ``nucleusGeometry`` the nucleus. Cells need
  their neighbours, so nuclei are then held until :meth:`QuPathGeoJSONWriter.close`.

Coordinates are level-0 pixels, rounded to ``geojson_decimals`` (QuPath reduces
them to 0.01 px on import anyway). Glands and lumina are held back until
:meth:`QuPathGeoJSONWriter.close` so that lumina can be nested whichever chunk
found them; they are few (thousands per slide), nuclei stream straight through.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_mod
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import QUPATH_OBJECT_TYPE, class_color
from cerberus_cli.outputs.options import WriterOptions

if TYPE_CHECKING:
    from typing import Self

#: QuPath measurement names (QuPath's own spelling for areas and lengths).
AREA_NAME = "Area µm^2"
PERIMETER_NAME = "Perimeter µm"
PROBABILITY_NAME = "Probability"
#: Class name of objects without a type: written without a QuPath classification.
UNTYPED = "no-label"
#: Keys of our fields under ``properties.metadata`` (all values strings).
METADATA_KEYS = ("task", "class_id", "class_name", "probability", "parent_uuid")


def measurement_value(v: float) -> float | str:
    """A measurement as QuPath writes it: a number, or "NaN" / "Infinity" / "-Infinity"."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def feature_properties(record: ObjectRecord) -> dict[str, Any]:
    """The ``properties`` of the QuPath Feature of ``record`` (without child objects)."""
    props: dict[str, Any] = {"objectType": QUPATH_OBJECT_TYPE.get(record.task, "detection")}
    if record.class_name != UNTYPED:
        props["classification"] = {
            "name": record.class_name,
            "color": list(class_color(record.task, record.class_id, record.class_name)),
        }
    props["measurements"] = {
        AREA_NAME: measurement_value(record.area_um2),
        PERIMETER_NAME: measurement_value(record.perimeter_um),
        PROBABILITY_NAME: measurement_value(record.probability),
    }
    metadata = {"task": record.task, "class_id": str(record.class_id),
                "class_name": record.class_name, "probability": repr(float(record.probability))}
    if record.parent_uuid is not None:
        metadata["parent_uuid"] = record.parent_uuid
    props["metadata"] = metadata
    return props


def feature_geometries(records: Sequence[ObjectRecord], options: WriterOptions) -> list[str]:
    """GeoJSON geometry text of each record (points for nuclei in ``point`` mode, rounded)."""
    if not records:
        return []
    geoms = np.empty(len(records), dtype=object)
    geoms[:] = [r.geometry for r in records]
    if options.nuclei_geometry == "point":
        nuclei = np.array([r.task == "nuclei" for r in records], bool)
        if nuclei.any():
            xy = np.array([(r.centroid_x, r.centroid_y) for r in records])[nuclei]
            geoms[nuclei] = shapely.points(xy)
    if options.geojson_decimals >= 0:
        d = options.geojson_decimals
        geoms = shapely.transform(geoms, lambda c: np.round(c, d))
    return [str(g) for g in shapely.to_geojson(geoms)]


def _rounded_geojson(geoms: Sequence[Any], options: WriterOptions) -> list[str]:
    """GeoJSON text of shapely geometries, coordinates rounded as ``options`` says."""
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    if options.geojson_decimals >= 0:
        d = options.geojson_decimals
        arr = shapely.transform(arr, lambda c: np.round(c, d))
    return [str(g) for g in shapely.to_geojson(arr)]


def _feature(record: ObjectRecord, geometry: str, children: Sequence[str] = (),
             nucleus: str | None = None) -> str:
    fields = feature_properties(record)
    if nucleus is not None:
        fields["objectType"] = "cell"
    props = json.dumps(fields, ensure_ascii=False, allow_nan=False)
    if nucleus is not None:
        props = props[:-1] + ', "nucleusGeometry": ' + nucleus + "}"
    if children:
        props = props[:-1] + ', "childObjects": [' + ", ".join(children) + "]}"
    return f'{{"type": "Feature", "id": "{record.uuid}", "geometry": {geometry}, ' \
           f'"properties": {props}}}'


class QuPathGeoJSONWriter:
    """Write object records as a QuPath GeoJSON FeatureCollection, streaming.

    ``gzip=True`` compresses the stream (name the file ``*.geojson.gz``); the gzip
    header names the final file, not the temporary one. ``options`` sets coordinate
    rounding, lumen nesting and point nuclei (defaults: :class:`WriterOptions`). Use
    as a context manager; an exception aborts and leaves no partial file.
    """

    def __init__(self, path: str | os.PathLike, gzip: bool = False, overwrite: bool = False,
                 options: WriterOptions | None = None, mpp: float | None = None) -> None:
        self.options = options or WriterOptions()
        if self.options.nuclei_as == "cell" and not (mpp and mpp > 0):
            raise ValueError("QuPath cells need the slide's um/px (mpp) to grow nuclei in um")
        self.mpp = mpp
        self._nuclei: list[ObjectRecord] = []
        self._target = AtomicPath(path, overwrite=overwrite)
        self.path = self._target.path
        self.count = 0
        self._written = 0
        self._glands: dict[str, ObjectRecord] = {}
        self._lumina: list[ObjectRecord] = []
        self._raw: IO[bytes] | None = None
        self._fh: IO[str]
        if gzip:
            self._raw = open(self._target.tmp, "wb")  # noqa: SIM115 (closed by close/abort)
            # The header records the final name and no time, so reruns give equal bytes.
            packed = gzip_mod.GzipFile(filename=self.path.name, mode="wb", fileobj=self._raw,
                                       compresslevel=6, mtime=0)
            self._fh = io.TextIOWrapper(packed, encoding="utf-8")
        else:
            self._fh = open(self._target.tmp, "w", encoding="utf-8")  # noqa: SIM115
        self._fh.write('{"type": "FeatureCollection", "features": [')

    def write(self, records: Iterable[ObjectRecord]) -> None:
        """Append one batch of records; glands and lumina wait for :meth:`close` when nested."""
        now: list[ObjectRecord] = []
        for rec in records:
            self.count += 1
            if self.options.lumina == "nested" and rec.task == "gland":
                self._glands[rec.uuid] = rec
            elif self.options.lumina == "nested" and rec.task == "lumen":
                self._lumina.append(rec)
            elif self.options.nuclei_as == "cell" and rec.task == "nuclei":
                self._nuclei.append(rec)
            else:
                now.append(rec)
        if now:
            self._emit([_feature(r, g) for r, g in zip(now, feature_geometries(now, self.options))])

    def _emit(self, features: list[str]) -> None:
        sep = ",\n" if self._written else "\n"
        self._fh.write(sep + ",\n".join(features))
        self._written += len(features)

    def _flush_nested(self) -> None:
        """Write the held glands with their lumina as child objects; orphans at top level."""
        lumina = self._lumina
        text = dict(zip((r.uuid for r in lumina), feature_geometries(lumina, self.options)))
        children: dict[str, list[str]] = {}
        orphans: list[str] = []
        for rec in lumina:
            feature = _feature(rec, text[rec.uuid])
            if rec.parent_uuid in self._glands:
                children.setdefault(rec.parent_uuid, []).append(feature)
            else:
                orphans.append(feature)
        glands = list(self._glands.values())
        features = [_feature(r, g, children.get(r.uuid, ()))
                    for r, g in zip(glands, feature_geometries(glands, self.options))]
        if features or orphans:
            self._emit(features + orphans)
        self._glands, self._lumina = {}, []

    def _flush_cells(self) -> None:
        """Write the held nuclei as QuPath cells (boundaries need every neighbour)."""
        from cerberus_cli.outputs.cells import cell_boundaries

        nuclei = self._nuclei
        if not nuclei:
            return
        assert self.mpp is not None  # checked when cells were asked for
        geoms = [r.geometry for r in nuclei]
        cells = cell_boundaries(geoms, self.options.cell_expansion_um / self.mpp)
        self._emit([_feature(r, c, nucleus=n) for r, c, n in zip(
            nuclei, _rounded_geojson(cells, self.options), _rounded_geojson(geoms, self.options))])
        self._nuclei = []

    def close(self) -> Path:
        """Finish the FeatureCollection and move the file into place."""
        if self._target.done:
            return self.path
        try:
            self._flush_cells()
            self._flush_nested()
            self._fh.write("\n]}\n")
            self._fh.close()
            if self._raw is not None:
                self._raw.close()
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Discard the partial output; ``path`` is left untouched."""
        for fh in (self._fh, self._raw):
            # A failing close does not matter: the temporary file is removed anyway.
            with contextlib.suppress(OSError, ValueError):
                if fh is not None:
                    fh.close()
        self._target.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_geojson(path: str | os.PathLike, records: Iterable[ObjectRecord],
                  gzip: bool | None = None, overwrite: bool = False,
                  options: WriterOptions | None = None, mpp: float | None = None) -> Path:
    """Write ``records`` as QuPath GeoJSON; gzip defaults to a ``.gz`` suffix; ``mpp``
    (level-0 um/px) is needed for cells."""
    if gzip is None:
        gzip = str(path).endswith(".gz")
    with QuPathGeoJSONWriter(path, gzip=gzip, overwrite=overwrite, options=options,
                             mpp=mpp) as writer:
        writer.write(records)
    return writer.path


def open_geojson_writer(path: str | os.PathLike, options: WriterOptions | None = None,
                        metadata: dict[str, Any] | None = None, slide: str | None = None,
                        overwrite: bool = False) -> QuPathGeoJSONWriter:
    """The GeoJSON writer of the object format table: gzipped for a ``.gz`` name, the
    slide's um/px from ``metadata["slide"]["mpp"]``; QuPath has no place for the rest."""
    mpp = ((metadata or {}).get("slide") or {}).get("mpp")
    return QuPathGeoJSONWriter(path, gzip=str(path).endswith(".gz"), overwrite=overwrite,
                               options=options, mpp=mpp)
