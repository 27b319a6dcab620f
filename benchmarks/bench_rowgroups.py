"""Spatial row groups: how much of a large slide's GeoParquet a bounding-box read touches.

500,000 nucleus polygons (13 vertices each) over a 100,000 x 80,000 px slide arrive in
4,096 px chunks in raster order, as ``cerberus segment`` emits them. They are written

* ``arrival``: in arrival order, 50,000-row groups (how files were written before:
  row groups are full-width strips of the slide);
* ``spatial``: by :class:`GeoParquetWriter` (task, then one Hilbert curve over the
  slide; 20,000-row groups by default).

For each file: write time, size, row groups, a full read and reads of 2,000 px boxes
(geopandas ``bbox=``, which filters on the ``bbox`` covering column, and DuckDB on
the same column), with the share of row groups a box read has to open.

Run: ``.venv/bin/python benchmarks/bench_rowgroups.py [--objects 500000]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from cerberus_cli.core.records import make_records
from cerberus_cli.outputs.geoparquet import GeoParquetWriter, records_to_table

WIDTH, HEIGHT, CHUNK, BOX = 100_000, 80_000, 4096, 2000


def chunks_of_nuclei(n: int, seed: int = 0) -> list[list]:
    """``n`` nuclei over the slide, grouped into raster-ordered chunks."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform((0, 0), (WIDTH, HEIGHT), (n, 2))
    cells = (xy[:, 1] // CHUNK).astype(int) * (WIDTH // CHUNK + 1) + (xy[:, 0] // CHUNK).astype(int)
    order = np.argsort(cells, kind="stable")
    geoms = shapely.buffer(shapely.points(xy[order]), rng.uniform(8, 14, n), quad_segs=3)
    cls = rng.integers(1, 7, n)
    recs = make_records(list(geoms), "nuclei", cls, ["lymphocyte"] * n, np.ones(n), 0.25,
                        [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)])
    bounds = np.flatnonzero(np.diff(cells[order])) + 1
    return [recs[a:b] for a, b in zip(np.r_[0, bounds], np.r_[bounds, n])]


def row_groups_hit(path: Path, box: tuple[float, float, float, float]) -> int:
    """Row groups whose bbox statistics intersect ``box`` (what a reader must open)."""
    md = pq.ParquetFile(path).metadata
    names = [md.row_group(0).column(j).path_in_schema for j in range(md.num_columns)]
    col = {k: names.index(f"bbox.{k}") for k in ("xmin", "ymin", "xmax", "ymax")}
    hit = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        st = {k: rg.column(j).statistics for k, j in col.items()}
        if (st["xmin"].min <= box[2] and st["xmax"].max >= box[0]
                and st["ymin"].min <= box[3] and st["ymax"].max >= box[1]):
            hit += 1
    return hit


def measure(path: Path, boxes: list[tuple[float, float, float, float]]) -> dict:
    md = pq.ParquetFile(path).metadata
    t0 = time.perf_counter()
    full = gpd.read_parquet(path)
    full_s = time.perf_counter() - t0
    box_s, hits, found = [], [], []
    for b in boxes:
        t0 = time.perf_counter()
        part = gpd.read_parquet(path, bbox=b)
        box_s.append(time.perf_counter() - t0)
        hits.append(row_groups_hit(path, b))
        found.append(len(part))
    con = duckdb.connect()
    duck_s = []
    for b in boxes:
        t0 = time.perf_counter()
        con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE bbox.xmin <= {b[2]} AND "
                    f"bbox.xmax >= {b[0]} AND bbox.ymin <= {b[3]} AND bbox.ymax >= {b[1]}"
                    ).fetchone()
        duck_s.append(time.perf_counter() - t0)
    return {"rows": len(full), "row_groups": md.num_row_groups,
            "size_mb": round(path.stat().st_size / 2**20, 1),
            "full_read_s": round(full_s, 3),
            "box_read_s": round(float(np.median(box_s)), 4),
            "box_objects": int(np.median(found)),
            "row_groups_opened": f"{np.mean(hits):.1f} / {md.num_row_groups}",
            "duckdb_box_count_s": round(float(np.median(duck_s)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=500_000)
    ap.add_argument("--row-group-size", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    chunks = chunks_of_nuclei(args.objects)
    make_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    boxes = [(x, y, x + BOX, y + BOX) for x, y in
             rng.uniform((0, 0), (WIDTH - BOX, HEIGHT - BOX), (5, 2))]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spatial = Path(tmp) / "spatial.parquet"
        t0 = time.perf_counter()
        with GeoParquetWriter(spatial, {}, row_group_size=args.row_group_size) as w:
            for c in chunks:
                w.write(c)
        spatial_write = time.perf_counter() - t0
        results["spatial"] = {"write_s": round(spatial_write, 2), **measure(spatial, boxes)}
        # The earlier layout: arrival order, 50,000-row groups; same geo metadata, so
        # geopandas' bbox= filter works on it the same way.
        arrival = Path(tmp) / "arrival.parquet"
        geo = pq.read_metadata(spatial).metadata[b"geo"]
        t0 = time.perf_counter()
        table = pa.concat_tables([records_to_table(c, "slide") for c in chunks])
        table = table.replace_schema_metadata({b"geo": geo})
        pq.write_table(table, arrival, row_group_size=50_000, compression="zstd")
        arrival_write = time.perf_counter() - t0
        del table
        results["arrival"] = {"write_s": round(arrival_write, 2), **measure(arrival, boxes)}
    results["setup"] = {"objects": args.objects, "slide_px": [WIDTH, HEIGHT], "box_px": BOX,
                        "chunk_px": CHUNK, "make_records_s": round(make_s, 1),
                        "python": platform.python_version(), "machine": platform.machine()}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
