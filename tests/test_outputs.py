"""Object records, GeoParquet / QuPath GeoJSON writers and the object reader."""

from __future__ import annotations

import gzip
import json
import random
import uuid

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.core.records import make_record, make_records, object_uuid
from cerberus_cli.outputs.frame import COLUMNS
from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter, write_geojson
from cerberus_cli.outputs.geoparquet import GeoParquetWriter, write_geoparquet
from cerberus_cli.outputs.options import WriterOptions
from cerberus_cli.outputs.read import read_objects
from cerberus_cli.outputs.spatial import hilbert_index, hilbert_order

GEOMETRY_TYPES = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString",
                  "MultiPolygon", "GeometryCollection"}


def _records(n: int = 60, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x, y = rng.uniform(0, 4000), rng.uniform(0, 3000)
        if i % 10 == 0:  # a gland with a hole, linked lumen below
            geom = Point(x, y).buffer(40).difference(Point(x, y).buffer(10))
            out.append(make_record(geom, "gland", 1, "gland", 0.9, 0.25, uuid=rng))
            out.append(make_record(Point(x, y).buffer(9), "lumen", 1, "lumen", 1.0, 0.25,
                                   parent_uuid=out[-1].uuid, uuid=rng))
        elif i % 10 == 5:
            geom = MultiPolygon([box(x, y, x + 5, y + 5), box(x + 10, y, x + 15, y + 5)])
            out.append(make_record(geom, "tissue", 5, "stroma", 0.7, 0.25, uuid=rng))
        else:
            out.append(make_record(Point(x, y).buffer(rng.uniform(3, 8)), "nuclei",
                                   rng.randrange(7), "epithelial", rng.random(), 0.25, uuid=rng))
    return out


# --- records -------------------------------------------------------------------------

def test_make_record_measures_in_micrometres():
    rec = make_record(box(10, 20, 30, 60), "gland", 2, "surface epithelium", 0.75, mpp=0.5)
    assert (rec.centroid_x, rec.centroid_y) == (20.0, 40.0)
    assert rec.area_um2 == pytest.approx(20 * 40 * 0.25)
    assert rec.perimeter_um == pytest.approx(120 * 0.5)
    assert uuid.UUID(rec.uuid).version == 4 and rec.parent_uuid is None


def test_make_record_seeded_uuid_is_reproducible_and_explicit_uuid_kept():
    a = make_record(box(0, 0, 1, 1), "nuclei", 1, "neutrophil", 1.0, 0.25, uuid=random.Random(3))
    b = make_record(box(0, 0, 1, 1), "nuclei", 1, "neutrophil", 1.0, 0.25, uuid=random.Random(3))
    assert a.uuid == b.uuid
    u = object_uuid("nuclei", 12.04, 7.96, "slide-1")
    assert u == object_uuid("nuclei", 12.0, 8.0, "slide-1") != object_uuid("nuclei", 12, 8, "s2")
    assert make_record(box(0, 0, 1, 1), "nuclei", 1, "x", 1.0, 0.25, uuid=u).uuid == u


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "cells"}, "unknown task"),
    ({"mpp": 0.0}, "mpp"),
    ({"geometry": Point(0, 0)}, "Polygon"),
    ({"geometry": Polygon()}, "Polygon"),
])
def test_make_record_rejects_bad_input(kwargs, match):
    args = {"geometry": box(0, 0, 1, 1), "task": "nuclei", "class_id": 1,
            "class_name": "x", "probability": 1.0, "mpp": 0.25} | kwargs
    with pytest.raises(ValueError, match=match):
        make_record(**args)


# --- Hilbert order ---------------------------------------------------------------------

def test_hilbert_index_is_a_continuous_bijection():
    order = 4
    yy, xx = np.mgrid[0:16, 0:16]
    d = hilbert_index(xx.ravel(), yy.ravel(), order)
    assert sorted(d.tolist()) == list(range(256))
    pts = np.stack([xx.ravel(), yy.ravel()], 1)[np.argsort(d)]
    steps = np.abs(np.diff(pts, axis=0)).sum(1)
    assert (steps == 1).all()  # consecutive curve cells are 4-neighbours


def test_hilbert_order_groups_nearby_points():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1000, (2000, 2))
    p = pts[hilbert_order(pts[:, 0], pts[:, 1])]
    along = np.hypot(*np.diff(p, axis=0).T).mean()
    shuffled = np.hypot(*np.diff(pts, axis=0).T).mean()
    assert along < shuffled / 10


# --- GeoParquet --------------------------------------------------------------------------

def _check_geoparquet_metadata(path, records):
    """Checks of GeoParquet 1.1.0 file metadata (spec: geoparquet.org/releases/v1.1.0)."""
    pf = pq.ParquetFile(path)
    kv = pf.metadata.metadata
    geo = json.loads(kv[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["primary_column"] in geo["columns"]
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert set(col["geometry_types"]) <= GEOMETRY_TYPES
    assert set(col["geometry_types"]) == {r.geometry.geom_type for r in records}
    assert "crs" in col and col["crs"] is None
    assert col.get("edges", "planar") in ("planar", "spherical")
    allb = shapely.total_bounds(np.array([r.geometry for r in records], dtype=object))
    assert col["bbox"] == pytest.approx(list(allb))
    cov = col["covering"]["bbox"]
    assert cov == {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    schema = pf.schema_arrow
    assert schema.field("geometry").type == "binary"
    for k in cov:  # covering fields: double, at the top level struct
        assert schema.field("bbox").type.field(k).type == "double"
    return kv


def test_geoparquet_schema_metadata_and_roundtrip(tmp_path):
    recs = _records()
    out = write_geoparquet(tmp_path / "o.parquet", recs, {"slide": "a.svs", "mpp": 0.25})
    kv = _check_geoparquet_metadata(out, recs)
    assert json.loads(kv[b"cerberus"]) == {"slide": "a.svs", "mpp": 0.25}
    t = pq.read_table(out)
    assert str(t.schema.field("class_id").type) == "int16"
    assert str(t.schema.field("probability").type) == "float"
    gdf = gpd.read_parquet(out)
    assert gdf.crs is None and len(gdf) == len(recs)
    by_id = {r.uuid: r for r in recs}
    for row in gdf.itertuples():
        r = by_id[row.uuid]
        assert row.geometry.equals_exact(r.geometry, 0)
        parent = row.parent_uuid if isinstance(row.parent_uuid, str) else None
        assert (row.task, row.class_id, row.class_name, parent) == (
            r.task, r.class_id, r.class_name, r.parent_uuid)
        assert row.area_um2 == r.area_um2 and row.probability == pytest.approx(r.probability)
    bb = t.column("bbox").to_pylist()
    assert bb[0] == dict(zip(("xmin", "ymin", "xmax", "ymax"),
                              shapely.from_wkb(t.column("geometry")[0].as_py()).bounds))


def test_geoparquet_streams_batches_into_spatial_row_groups(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "s.parquet"
    batches = []
    with GeoParquetWriter(path, {}, row_group_size=100) as w:
        for cy in range(3):  # chunks in raster order, 150 objects each
            for cx in range(3):
                batch = [make_record(Point(cx * 1000 + rng.uniform(0, 1000),
                                           cy * 1000 + rng.uniform(0, 1000)).buffer(4),
                                     "nuclei", 3, "lymphocyte", 1.0, 0.5, uuid=rng)
                         for _ in range(150)]
                batch.append(make_record(Point(cx * 1000 + 500, cy * 1000 + 500).buffer(60),
                                         "gland", 1, "gland", 1.0, 0.5, uuid=rng))
                batches.append(batch)
                w.write(batch)
        assert not path.exists()  # nothing under the final name before close
        assert not list(tmp_path.glob("*.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]  # spill removed
    pf = pq.ParquetFile(path)
    md = pf.metadata
    assert md.num_rows == 1359
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    # 1350 nuclei in 14 equal parts, then the 9 glands in their own row group.
    assert max(sizes) <= 100 and sizes[-1] == 9 and len(sizes) == 15
    t = pq.read_table(path)
    assert set(t.column("slide").to_pylist()) == {"s"}
    tasks = t.column("task").to_pylist()
    assert tasks == ["nuclei"] * 1350 + ["gland"] * 9
    # Each row group covers a compact region: about 1/14 of the 3000 x 3000 px slide.
    names = [md.row_group(0).column(j).path_in_schema for j in range(md.num_columns)]
    xmin, xmax = names.index("bbox.xmin"), names.index("bbox.xmax")
    ymin, ymax = names.index("bbox.ymin"), names.index("bbox.ymax")
    areas = []
    for i in range(14):
        rg = md.row_group(i)
        w_ = rg.column(xmax).statistics.max - rg.column(xmin).statistics.min
        h_ = rg.column(ymax).statistics.max - rg.column(ymin).statistics.min
        areas.append(w_ * h_)
    assert np.mean(areas) < 3000 * 3000 / 5
    # geopandas uses the bbox covering to read only what intersects a window.
    window = gpd.read_parquet(path, bbox=(0, 0, 900, 900))
    assert 0 < len(window) < 200
    assert set(window.uuid) <= {r.uuid for r in batches[0]}
    # Row-group statistics of the covering column allow spatial skipping.
    hit = [i for i in range(14)
           if md.row_group(i).column(xmin).statistics.min < 900
           and md.row_group(i).column(ymin).statistics.min < 900]
    assert len(hit) <= 4


def test_geoparquet_points_mode_and_slide_name(tmp_path):
    recs = _records()
    out = write_geoparquet(tmp_path / "TCGA-AA.dx1.tissue.parquet", recs,
                           options=WriterOptions(nuclei_geometry="point"))
    gdf = gpd.read_parquet(out)
    assert set(gdf["slide"]) == {"TCGA-AA.dx1"}
    nuclei = gdf[gdf.task == "nuclei"]
    assert (nuclei.geom_type == "Point").all()
    assert np.allclose(nuclei.geometry.x, nuclei.centroid_x)
    assert (gdf[gdf.task != "nuclei"].geom_type != "Point").all()
    geo = json.loads(pq.ParquetFile(out).metadata.metadata[b"geo"])
    assert "Point" in geo["columns"]["geometry"]["geometry_types"]
    named = write_geoparquet(tmp_path / "x.parquet", recs[:3], slide="slide 7")
    assert set(pq.read_table(named).column("slide").to_pylist()) == {"slide 7"}


def test_geoparquet_empty_file_is_valid(tmp_path):
    path = write_geoparquet(tmp_path / "e.parquet", [], {"slide": "a"})
    geo = json.loads(pq.ParquetFile(path).metadata.metadata[b"geo"])
    assert geo["columns"]["geometry"]["geometry_types"] == []
    assert len(gpd.read_parquet(path)) == 0
    assert list(read_objects(path).columns) == COLUMNS


def test_writers_abort_on_error_and_never_overwrite(tmp_path):
    path = tmp_path / "o.parquet"
    with pytest.raises(RuntimeError), GeoParquetWriter(path, {}) as w:
        w.write(_records(5))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    gj = tmp_path / "o.geojson"
    with pytest.raises(RuntimeError), QuPathGeoJSONWriter(gj) as w:
        w.write(_records(5))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    gj.write_text("user data")
    with pytest.raises(CerberusError, match="already exists"):
        write_geojson(gj, _records(3))
    with pytest.raises(CerberusError, match="already exists"):
        write_geoparquet(gj, _records(3))
    assert gj.read_text() == "user data" and len(list(tmp_path.iterdir())) == 1
    write_geojson(gj, _records(3), overwrite=True)
    assert len(read_objects(gj)) == len(_records(3))
    with pytest.raises(InputError, match="does not exist"):
        write_geoparquet(tmp_path / "missing" / "o.parquet", [])


def test_writer_refuses_a_file_created_during_the_run(tmp_path):
    path = tmp_path / "o.parquet"
    w = GeoParquetWriter(path, {})
    w.write(_records(3))
    path.write_text("someone else's")
    with pytest.raises(CerberusError, match="already exists"):
        w.close()
    assert path.read_text() == "someone else's" and len(list(tmp_path.iterdir())) == 1


# --- GeoJSON ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["o.geojson", "o.geojson.gz"])
def test_geojson_is_qupath_feature_collection(tmp_path, name):
    recs = _records()
    path = tmp_path / name
    with QuPathGeoJSONWriter(path, gzip=name.endswith(".gz")) as w:
        w.write(recs[:20])
        w.write([])
        w.write(recs[20:])
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    assert doc["type"] == "FeatureCollection"
    features = {}
    for f in doc["features"]:
        features[f["id"]] = f
        for child in f["properties"].get("childObjects", []):
            features[child["id"]] = child
    assert len(features) == len(recs)
    lumina = {r.uuid for r in recs if r.task == "lumen"}
    assert not lumina & {f["id"] for f in doc["features"]}  # all nested in their gland
    kinds = {}
    for r in recs:
        f = features[r.uuid]
        p = f["properties"]
        assert f["type"] == "Feature"
        assert shapely.geometry.shape(f["geometry"]).equals_exact(r.geometry, 0.0071)
        kinds[r.task] = p["objectType"]
        assert p["classification"]["name"] == r.class_name
        color = p["classification"]["color"]
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert p["measurements"]["Area µm^2"] == pytest.approx(r.area_um2)
        assert p["measurements"]["Perimeter µm"] == pytest.approx(r.perimeter_um)
        assert p["measurements"]["Probability"] == pytest.approx(r.probability)
        meta = p["metadata"]
        assert all(isinstance(v, str) for v in meta.values())
        assert meta["task"] == r.task and meta.get("parent_uuid") == r.parent_uuid
        assert int(meta["class_id"]) == r.class_id and float(meta["probability"]) == r.probability
        if r.task == "lumen":
            parent = features[r.parent_uuid]["properties"]["childObjects"]
            assert r.uuid in {c["id"] for c in parent}
    assert kinds == {"nuclei": "detection", "lumen": "detection",
                     "gland": "annotation", "tissue": "annotation"}
    gland = next(features[r.uuid] for r in recs if r.task == "gland")
    assert gland["properties"]["classification"]["color"] == [0, 200, 0]  # GLAND_TYPES[1]


# --- reader -----------------------------------------------------------------------------

@pytest.mark.parametrize("lumina", ["nested", "flat"])
def test_read_objects_same_table_from_both_formats(tmp_path, lumina):
    recs = _records()
    options = WriterOptions(geojson_decimals=-1, lumina=lumina)
    a = read_objects(write_geoparquet(tmp_path / "o.parquet", recs, {}))
    b = read_objects(write_geojson(tmp_path / "o.geojson.gz", recs, options=options))
    assert list(a.columns) == list(b.columns) == COLUMNS
    assert (a.dtypes == b.dtypes).all()
    a, b = a.set_index("uuid").sort_index(), b.set_index("uuid").sort_index()
    assert a.geometry.geom_equals_exact(b.geometry, 0).all()
    cols = ["task", "class_id", "class_name", "probability", "centroid_x", "centroid_y",
            "area_um2", "perimeter_um"]
    assert a[cols].equals(b[cols])
    assert a["parent_uuid"].tolist() == b["parent_uuid"].tolist()


def test_read_objects_accepts_plain_qupath_export(tmp_path):
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps([{
        "type": "Feature", "id": str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 2], [0, 2], [0, 0]]]},
        "properties": {"objectType": "detection",
                       "classification": {"name": "lymphocyte", "color": [0, 0, 255]},
                       "measurements": [{"name": "Area µm^2", "value": 2.0}]}}]))
    df = read_objects(path)
    row = df.iloc[0]
    assert (row.task, row.class_id, row.class_name) == ("nuclei", 3, "lymphocyte")
    assert (row.centroid_x, row.centroid_y, row.area_um2) == (2.0, 1.0, 2.0)
    assert np.isnan(row.perimeter_um) and row.parent_uuid is None


@pytest.mark.parametrize("content,match", [
    (b"not json at all", "cannot read objects"),
    (b'{"type": "Topology"}', "not a GeoJSON"),
    (b'{"type": "FeatureCollection", "features": [{"type": "Feature"}]}', "no geometry"),
    (b"PAR1garbage", "cannot read objects|not a GeoParquet"),
])
def test_read_objects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_objects(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        read_objects(tmp_path / "absent.parquet")


def test_make_records_matches_make_record():
    geoms = [box(0, 0, 4, 2), Point(10, 10).buffer(3),
             MultiPolygon([box(0, 0, 1, 1), box(5, 5, 7, 7)])]
    many = make_records(geoms, "gland", [1, 2, 1], ["gland", "surface epithelium", "gland"],
                        [0.5, 0.6, 0.7], 0.5, ["a", "b", "c"], [None, "p", None])
    for g, r, u in zip(geoms, many, "abc"):
        one = make_record(g, "gland", r.class_id, r.class_name, r.probability, 0.5,
                          parent_uuid=r.parent_uuid, uuid=uuid.uuid5(uuid.NAMESPACE_DNS, u))
        assert (r.centroid_x, r.centroid_y) == (one.centroid_x, one.centroid_y)
        assert (r.area_um2, r.perimeter_um) == (one.area_um2, one.perimeter_um)
    assert many[1].parent_uuid == "p" and many[0].uuid == "a"
    with pytest.raises(ValueError, match="Polygon"):
        make_records([Point(0, 0)], "gland", [1], ["gland"], [1.0], 0.5, ["a"])
    assert make_records([], "nuclei", [], [], [], 0.5, []) == []


def test_read_objects_rejects_plain_parquet_and_foreign_geoparquet(tmp_path):
    import pyarrow as pa

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), plain)
    with pytest.raises(InputError, match="plain.parquet: not a GeoParquet"):
        read_objects(plain)
    foreign = tmp_path / "foreign.parquet"
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[box(0, 0, 1, 1)]).to_parquet(foreign)
    with pytest.raises(InputError, match="missing columns uuid, task"):
        read_objects(foreign)
