"""QuPath GeoJSON that QuPath imports without losing anything.

``qupath_import_problems`` is written from QuPath's own import code
(``qupath-core``: ``QuPathTypeAdapters.PathObjectTypeAdapter.parseObject``,
``MeasurementListTypeAdapter``, ``GsonTools.PathClassTypeAdapter``,
``ROITypeAdapters.parseGeometry`` and ``PathClass`` name validation, QuPath 0.5/0.6).
It lists what QuPath would reject, warn about or silently drop. No QuPath build
installs from the package indexes this project uses (it is a Java application
distributed on its own), so the rules are checked here instead of a headless import.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import unicodedata
import uuid
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.records import make_record
from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter, write_geojson
from cerberus_cli.outputs.object_files import open_object_writer, write_objects
from cerberus_cli.outputs.object_formats import object_suffix
from cerberus_cli.outputs.options import WriterOptions
from cerberus_cli.outputs.read import read_objects

#: QuPath object types (PathObjectTypeAdapter.MAP_TYPES plus legacy names it accepts).
OBJECT_TYPES = {"annotation", "detection", "cell", "tile", "tmaCore", "tma_core", "root",
                "PathAnnotationObject", "PathDetectionObject", "PathCellObject",
                "PathTileObject", "TMACoreObject", "PathRootObject"}
GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon", "GeometryCollection"}
#: Strings MeasurementListTypeAdapter turns into numbers besides Double.parseDouble.
SPECIAL_NUMBERS = {"nan", "inf", "-inf"}
#: Java's Double.parseDouble accepts these spellings (and plain decimal numbers).
JAVA_DOUBLE = re.compile(r"^[+-]?(NaN|Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?)$")


def _valid_class_name(name: Any) -> bool:
    """PathClass rules: non-blank; no newline, carriage return or ':' (the delimiter);
    only word characters, letters, digits, punctuation and spaces (PATTERN_NAME)."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r:"):
        return False
    return all(c.isalnum() or c == "_" or c == " " or unicodedata.category(c).startswith("P")
               or c in "$+<=>^`|~" for c in name)


def _ring_problems(ring: Any, where: str) -> list[str]:
    if not isinstance(ring, list) or (ring and len(ring) < 4):
        return [f"{where}: a linear ring needs 0 or >= 4 positions (JTS)"]
    if ring and ring[0] != ring[-1]:
        return [f"{where}: ring is not closed"]
    return [p for i, c in enumerate(ring) for p in _position_problems(c, f"{where}[{i}]")]


def _position_problems(pos: Any, where: str) -> list[str]:
    if not isinstance(pos, list) or len(pos) not in (2, 3):
        return [f"{where}: a position has 2 or 3 numbers"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in pos):
        return [f"{where}: position values must be finite numbers"]
    return []


def _geometry_problems(geom: Any, where: str) -> list[str]:
    if not isinstance(geom, dict) or "type" not in geom:
        return [f"{where}: geometry without type (QuPath makes no ROI)"]
    kind = geom["type"]
    if kind not in GEOMETRY_TYPES:
        return [f"{where}: unknown geometry type {kind!r}"]
    if kind == "GeometryCollection":
        return [p for i, g in enumerate(geom.get("geometries", []))
                for p in _geometry_problems(g, f"{where}.geometries[{i}]")]
    coords = geom.get("coordinates")
    if not isinstance(coords, list):
        return [f"{where}: no coordinates"]
    if kind == "Point":
        return _position_problems(coords, where)
    if kind in ("MultiPoint", "LineString"):
        return [p for i, c in enumerate(coords) for p in _position_problems(c, f"{where}[{i}]")]
    if kind == "MultiLineString":
        return [p for i, line in enumerate(coords) for j, c in enumerate(line)
                for p in _position_problems(c, f"{where}[{i}][{j}]")]
    polygons = [coords] if kind == "Polygon" else coords
    return [p for i, poly in enumerate(polygons) for j, ring in enumerate(poly)
            for p in _ring_problems(ring, f"{where}[{i}][{j}]")]


def _feature_problems(f: Any, where: str) -> list[str]:
    if not isinstance(f, dict):
        return [f"{where}: not an object"]
    out = []
    if f.get("type") != "Feature":
        out.append(f"{where}: type is not Feature")
    if "id" in f:
        try:
            uuid.UUID(str(f["id"]))
        except ValueError:
            out.append(f"{where}: id {f['id']!r} is not a UUID (QuPath drops it)")
    out += _geometry_problems(f.get("geometry"), f"{where}.geometry")
    props = f.get("properties")
    if props is None:
        return out
    if not isinstance(props, dict):
        return out + [f"{where}: properties is not an object"]
    kind = props.get("objectType", props.get("object_type", props.get("type", "unknown")))
    if kind not in OBJECT_TYPES | {"unknown"}:
        out.append(f"{where}: unknown objectType {kind!r} (QuPath warns, makes an annotation)")
    if "name" in props and not isinstance(props["name"], str):
        out.append(f"{where}: name is not a string")
    cls = props.get("classification")
    if cls is not None and not isinstance(cls, str):
        if not isinstance(cls, dict) or not (("name" in cls or "names" in cls) and "color" in cls):
            out.append(f"{where}: classification needs name(s) and color (JsonParseException)")
        else:
            names = [cls["name"]] if "name" in cls else cls["names"]
            if not all(_valid_class_name(n) for n in names):
                out.append(f"{where}: invalid class name {names!r}")
            color = cls["color"]
            if not (isinstance(color, list) and len(color) in (0, 1, 3, 4)
                    and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
                out.append(f"{where}: classification color must be 0/1/3/4 ints 0..255")
    meas = props.get("measurements")
    if isinstance(meas, dict):
        for k, v in meas.items():
            if isinstance(v, bool) or not (
                    isinstance(v, (int, float)) or (isinstance(v, str) and (
                        v.lower() in SPECIAL_NUMBERS or JAVA_DOUBLE.match(v.strip())))):
                out.append(f"{where}: measurement {k!r}={v!r} is dropped or fails to parse")
    elif isinstance(meas, list):
        for m in meas:
            if not (isinstance(m, dict) and isinstance(m.get("name"), str)
                    and isinstance(m.get("value"), (int, float))):
                out.append(f"{where}: measurement entry {m!r} fails to parse")
    elif meas is not None:
        out.append(f"{where}: measurements ignored (neither object nor array)")
    meta = props.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            out.append(f"{where}: metadata ignored (not an object)")
        else:
            for k, v in meta.items():
                if not isinstance(v, str):
                    out.append(f"{where}: metadata {k!r} is not a string (dropped or changed)")
    # parseObject reads nucleusGeometry for cells only (createCellObject(roi, nucleusROI, ...)).
    if "nucleusGeometry" in props:
        if kind not in ("cell", "PathCellObject"):
            out.append(f"{where}: nucleusGeometry on a {kind} is ignored (cells only)")
        else:
            out += _geometry_problems(props["nucleusGeometry"], f"{where}.nucleusGeometry")
    children = props.get("childObjects", props.get("children"))
    if children is not None:
        if not isinstance(children, list):
            out.append(f"{where}: childObjects is not an array")
        else:
            for i, c in enumerate(children):
                out += _feature_problems(c, f"{where}.childObjects[{i}]")
    return out


def qupath_import_problems(doc: Any) -> list[str]:
    """What QuPath's GeoJSON import would reject, drop or warn about in ``doc``."""
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and isinstance(doc.get("features"), list):
        features = doc["features"]
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    else:
        return ["no features array (QuPath imports nothing)"]
    return [p for i, f in enumerate(features) for p in _feature_problems(f, f"features[{i}]")]


def _strict_json(text: str) -> Any:
    """Parse as strict JSON: NaN / Infinity tokens are not JSON (GDAL, browsers refuse)."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-JSON number {token}")
    return json.loads(text, parse_constant=refuse)


def _load(path) -> Any:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return _strict_json(fh.read())


def _slide_records(seed: int = 0) -> list:
    """Nuclei (typed, untyped, one NaN measure), glands with lumina, tissue regions."""
    rng = random.Random(seed)
    out = []
    for i in range(6):
        x, y = 300.0 * i + 150.123456, 200.987654
        gland = make_record(Point(x, y).buffer(100).difference(Point(x, y).buffer(30)),
                            "gland", 1 + i % 2, ("gland", "surface epithelium")[i % 2], 0.8,
                            0.25, uuid=rng)
        out.append(gland)
        for dx in (-50, 50):
            out.append(make_record(Point(x + dx, y).buffer(12), "lumen", 1, "lumen", 1.0, 0.25,
                                   parent_uuid=gland.uuid, uuid=rng))
    for i in range(40):
        cls = i % 7
        rec = make_record(Point(rng.uniform(0, 2000), rng.uniform(400, 800)).buffer(6.3333),
                          "nuclei", cls, ("no-label", "neutrophil", "epithelial", "lymphocyte",
                                          "plasma", "eosinophil", "connective")[cls],
                          rng.random(), 0.25, uuid=rng)
        out.append(rec)
    out.append(out[-1].__class__(**{**out[-1].__dict__, "uuid": str(uuid.uuid4()),
                                    "perimeter_um": float("nan"),
                                    "area_um2": float("inf")}))
    out.append(make_record(box(0, 0, 2000, 1000).difference(box(100, 100, 300, 300)), "tissue", 5,
                           "stroma", 0.66, 0.25, uuid=rng))
    return out


@pytest.mark.parametrize("options", [WriterOptions(), WriterOptions(lumina="flat"),
                                     WriterOptions(nuclei_geometry="point", geojson_decimals=-1)])
def test_written_geojson_passes_qupath_import_rules(tmp_path, options):
    recs = _slide_records()
    path = write_geojson(tmp_path / "s.geojson", recs, options=options)
    doc = _load(path)
    assert qupath_import_problems(doc) == []
    top = {f["id"]: f for f in doc["features"]}
    nested = {c["id"]: c for f in doc["features"]
              for c in f["properties"].get("childObjects", [])}
    assert len(top) + len(nested) == len(recs)
    for r in recs:
        f = top.get(r.uuid) or nested[r.uuid]
        p = f["properties"]
        assert p["metadata"]["task"] == r.task
        assert p["metadata"]["class_name"] == r.class_name
        assert ("classification" in p) == (r.class_name != "no-label")
        if r.task == "lumen":  # nested in its gland, or flat with the link in metadata
            assert (r.uuid in nested) == (options.lumina == "nested")
            assert p["metadata"]["parent_uuid"] == r.parent_uuid
        if r.task == "nuclei" and options.nuclei_geometry == "point":
            assert f["geometry"] == {"type": "Point", "coordinates": [r.centroid_x, r.centroid_y]}
        assert p["objectType"] == ("detection" if r.task in ("nuclei", "lumen") else "annotation")
    odd = top[recs[-2].uuid]["properties"]["measurements"]
    assert odd["Perimeter µm"] == "NaN" and odd["Area µm^2"] == "Infinity"


def test_read_back_keeps_every_field(tmp_path):
    recs = _slide_records()
    for options in (WriterOptions(), WriterOptions(lumina="flat")):
        path = write_geojson(tmp_path / f"{options.lumina}.geojson.gz", recs, options=options)
        df = read_objects(path).set_index("uuid")
        assert len(df) == len(recs)
        for r in recs:
            row = df.loc[r.uuid]
            assert (row.task, row.class_id, row.class_name, row.parent_uuid) == (
                r.task, r.class_id, r.class_name, r.parent_uuid)
            assert row.probability == np.float32(r.probability)
            assert row.geometry.equals_exact(r.geometry, 0.0071)
        odd = df.loc[recs[-2].uuid]
        assert np.isnan(odd.perimeter_um) and np.isinf(odd.area_um2)


def test_rounding_points_and_gzip_header(tmp_path):
    recs = _slide_records()
    full = write_geojson(tmp_path / "full.geojson", recs, options=WriterOptions(geojson_decimals=-1))
    short = write_geojson(tmp_path / "short.geojson", recs)
    points = write_geojson(tmp_path / "points.geojson", recs,
                           options=WriterOptions(nuclei_geometry="point"))
    assert short.stat().st_size < 0.8 * full.stat().st_size
    assert points.stat().st_size < short.stat().st_size
    coords = shapely.get_coordinates(shapely.from_geojson(short.read_text()))
    assert np.allclose(coords, np.round(coords, 2))
    gz = write_geojson(tmp_path / "S.geojson.gz", recs)
    raw = gz.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[3] & 0x08  # FNAME flag set
    name = raw[10:raw.index(b"\x00", 10)]
    assert name == b"S.geojson"  # the final name, not the temporary .partial one
    assert raw[4:8] == b"\x00\x00\x00\x00"  # no time stamp: reruns give equal bytes
    again = write_geojson(tmp_path / "S.geojson.gz", recs, overwrite=True)
    assert again.read_bytes() == raw
    assert _load(gz) == _load(short)


def test_checker_catches_what_qupath_drops():
    good = {"type": "Feature", "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
            "properties": {"objectType": "detection",
                           "classification": {"name": "tumour", "color": [1, 2, 3]},
                           "measurements": {"a": 1.5, "b": "NaN"}, "metadata": {"k": "v"}}}
    assert qupath_import_problems([good]) == []

    def bad(**change: Any) -> list[str]:
        f = json.loads(json.dumps(good))
        for k, v in change.items():
            target = f if k in ("id", "geometry") else f["properties"]
            target[k] = v
        return qupath_import_problems({"type": "FeatureCollection", "features": [f]})

    assert bad(id="nucleus-7")
    assert bad(geometry={"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]})
    assert bad(objectType="nucleus")
    assert bad(classification={"name": "tumour"})
    assert bad(classification={"name": "a:b", "color": [1, 2, 3]})
    assert bad(measurements={"a": None})
    assert bad(metadata={"class_id": 3})
    assert bad(childObjects=[{"type": "Feature", "geometry": None}])
    assert bad(nucleusGeometry=good["geometry"])  # a detection has no nucleus
    assert bad(objectType="cell", nucleusGeometry={"type": "Polygon",
                                                "coordinates": [[[0, 0], [1, 0], [0, 0]]]})
    assert not bad(objectType="cell", nucleusGeometry=good["geometry"])


def test_tissue_regions_and_object_writer_by_suffix(tmp_path):
    recs = _slide_records()
    tissue = [r for r in recs if r.task == "tissue"]
    path = write_objects(tmp_path / ("S.tissue" + object_suffix("geojson", gzip=True)), tissue)
    doc = _load(path)
    assert qupath_import_problems(doc) == []
    assert [f["properties"]["objectType"] for f in doc["features"]] == ["annotation"]
    assert doc["features"][0]["properties"]["classification"]["name"] == "stroma"
    pq_path = write_objects(tmp_path / "S.tissue.parquet", tissue, slide="S")
    assert read_objects(pq_path).class_name.tolist() == ["stroma"]
    with open_object_writer(tmp_path / "o.geojson", WriterOptions(lumina="flat")) as w:
        assert isinstance(w, QuPathGeoJSONWriter) and w.options.lumina == "flat"
    with pytest.raises(ValueError, match="object files end in"):
        open_object_writer(tmp_path / "o.csv")
    with pytest.raises(ValueError, match="gzip applies to GeoJSON"):
        object_suffix("parquet", gzip=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"lumina": "inside"}, "--lumina must be one of nested, flat"),
    ({"nuclei_geometry": "cells"}, "--nuclei-geometry must be one of"),
    ({"geojson_decimals": 20}, "--geojson-decimals"),
    ({"row_group_size": 0}, "--row-group-size"),
])
def test_writer_options_are_checked(kwargs, match):
    with pytest.raises(InputError, match=match):
        WriterOptions(**kwargs)


def test_writer_option_flags_do_not_clash_with_segment():
    import dataclasses

    segment_flags = {"model", "tile", "margin", "batch-size", "device", "precision",
                     "channels-last", "compile", "workers", "post-workers", "chunk", "backend",
                     "mpp", "mask", "format", "gzip", "tissue-polygons", "save-maps", "overlay",
                     "overwrite", "fail-fast"}
    ours = {f.name.replace("_", "-") for f in dataclasses.fields(WriterOptions)}
    assert ours and not ours & segment_flags


def test_cells_mode_writes_qupath_cells(tmp_path):
    recs = _slide_records()
    mpp = 0.25
    path = write_geojson(tmp_path / "c.geojson", recs, options=WriterOptions(nuclei_as="cell"),
                         mpp=mpp)
    doc = _load(path)
    assert qupath_import_problems(doc) == []
    cells = [f for f in doc["features"] if f["properties"]["objectType"] == "cell"]
    nuclei = [r for r in recs if r.task == "nuclei"]
    assert len(cells) == len(nuclei)
    by_id = {r.uuid: r for r in nuclei}
    shapes = []
    for f in cells:
        r = by_id[f["id"]]
        cell = shapely.from_geojson(json.dumps(f["geometry"]))
        nucleus = shapely.from_geojson(json.dumps(f["properties"]["nucleusGeometry"]))
        assert cell.geom_type == "Polygon" and cell.is_valid
        assert nucleus.equals_exact(r.geometry, 0.0071)
        assert cell.buffer(0.02).contains(nucleus)  # the nucleus lies inside its cell
        assert cell.within(r.geometry.buffer(5 / mpp + 0.02))  # grown by at most 5 um
        assert f["properties"]["metadata"]["task"] == "nuclei"
        assert ("classification" in f["properties"]) == (r.class_name != "no-label")
        shapes.append(cell)
    # Neighbours limit each other: cells overlap only where their nuclei do (these random
    # nuclei overlap a little; a cell always holds its whole nucleus).
    def overlap(geoms) -> float:
        return sum(g.area for g in geoms) - shapely.union_all(geoms).area
    assert overlap(shapes) <= 2 * overlap([r.geometry for r in nuclei]) + 1.0
    assert sum(c.area for c in shapes) > 2 * sum(r.geometry.area for r in nuclei)
    # Read back as nuclei, every other object as before.
    df = read_objects(path).set_index("uuid")
    for r in nuclei:
        assert df.loc[r.uuid].geometry.equals_exact(r.geometry, 0.0071)
    with pytest.raises(ValueError, match="mpp"):
        QuPathGeoJSONWriter(tmp_path / "n.geojson", options=WriterOptions(nuclei_as="cell"))


def test_cells_mode_options_are_checked():
    from cerberus_cli.inference.options import SegmentOptions

    with pytest.raises(InputError, match="--nuclei-as cell needs nucleus outlines"):
        WriterOptions(nuclei_as="cell", nuclei_geometry="point")
    with pytest.raises(InputError, match="--cell-expansion-um"):
        WriterOptions(cell_expansion_um=-1.0)
    with pytest.raises(InputError, match="--format geojson only"):
        SegmentOptions(writer=WriterOptions(nuclei_as="cell"))


def test_segment_cells_through_the_cli(phantom_slide, tmp_path):
    from click.testing import CliRunner

    from cerberus_cli.cli import main

    res = CliRunner().invoke(main, [
        "-q", "segment", str(phantom_slide), "-o", str(tmp_path), "--tile", "208", "--workers",
        "0", "--post-workers", "0", "--batch-size", "2", "--no-overlay", "--format", "geojson",
        "--nuclei-as", "cell", "--cell-expansion-um", "4"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = _load(tmp_path / "phantom.geojson")
    assert qupath_import_problems(doc) == []
    kinds = [f["properties"]["objectType"] for f in doc["features"]]
    assert "cell" in kinds and all(f["properties"]["metadata"]["task"] == "nuclei"
                                   for f in doc["features"] if f["properties"]["objectType"] == "cell")
    assert all("nucleusGeometry" in f["properties"] for f in doc["features"]
               if f["properties"]["objectType"] == "cell")
    record = json.loads((tmp_path / "phantom.run.json").read_text())
    assert record["provenance"]["options"]["writer"]["nuclei_as"] == "cell"
    assert record["provenance"]["options"]["writer"]["cell_expansion_um"] == 4
