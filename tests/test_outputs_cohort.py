"""A folder of several slides' outputs read at once by DuckDB and geopandas."""

from __future__ import annotations

import random

import duckdb
import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import pytest
from shapely.geometry import Point

from cerberus_cli.core.records import make_record
from cerberus_cli.outputs.geoparquet import write_geoparquet

SLIDES = {"TCGA-AA-3520-01Z-00-DX1.f1d2": 120, "TCGA-AG-3892-01Z-00-DX1.0a7b": 80, "phantom": 50}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """``OUT/`` as ``segment`` leaves it for three slides: objects and tissue regions."""
    out = tmp_path_factory.mktemp("out")
    rng = random.Random(0)
    for slide, n in SLIDES.items():
        recs = [make_record(Point(rng.uniform(0, 8000), rng.uniform(0, 6000)).buffer(6),
                            "nuclei", 3, "lymphocyte", 0.9, 0.25, uuid=rng) for _ in range(n)]
        recs += [make_record(Point(4000, 3000).buffer(300), "gland", 1, "gland", 0.8, 0.25,
                             uuid=rng)]
        write_geoparquet(out / f"{slide}.parquet", recs, {"slide": {"path": f"{slide}.svs"}},
                         row_group_size=32)
        write_geoparquet(out / f"{slide}.tissue.parquet",
                         [make_record(Point(4000, 3000).buffer(3000), "tissue", 5, "stroma", 1.0,
                                      0.25, uuid=rng)])
    return out


def test_duckdb_counts_per_slide_and_skips_by_bbox(cohort):
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT slide, task, count(*) FROM read_parquet('{cohort}/*.parquet') "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    expect = sorted([(s, "gland", 1) for s in SLIDES] + [(s, "nuclei", n) for s, n in SLIDES.items()]
                    + [(s, "tissue", 1) for s in SLIDES])
    assert rows == expect
    window = con.execute(
        f"SELECT slide, count(*) FROM read_parquet('{cohort}/*.parquet') "
        "WHERE task = 'nuclei' AND bbox.xmin < 2000 AND bbox.ymin < 2000 GROUP BY ALL").fetchall()
    assert 0 < sum(n for _, n in window) < sum(SLIDES.values()) / 4
    # The file metadata (slide path, model) is there for provenance queries.
    meta = con.execute(f"SELECT key, value FROM parquet_kv_metadata('{cohort}/phantom.parquet') "
                       "WHERE key = 'cerberus'").fetchall()
    assert b"phantom.svs" in meta[0][1]


def test_geopandas_reads_the_folder_with_slide_names(cohort):
    files = sorted(cohort.glob("*.parquet"))
    frame = pd.concat([gpd.read_parquet(f) for f in files], ignore_index=True)
    assert isinstance(frame, gpd.GeoDataFrame) and frame.crs is None
    counts = frame[frame.task == "nuclei"].groupby("slide").size().to_dict()
    assert counts == SLIDES
    # A bbox read touches only what it needs, per slide file.
    part = gpd.read_parquet(cohort / "phantom.parquet", bbox=(0, 0, 2000, 2000))
    assert 0 < len(part) < SLIDES["phantom"] / 2
    pf = pq.ParquetFile(cohort / "TCGA-AA-3520-01Z-00-DX1.f1d2.parquet")
    assert pf.metadata.num_row_groups == 5  # 120 nuclei in 4 groups of <= 32, 1 gland
