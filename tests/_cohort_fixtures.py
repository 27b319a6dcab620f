"""A small cohort for the cohort tests: copies of the phantom slide and a one-tile mask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

#: Fast segment options: one small network tile, everything in the main process.
FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]


def write_cohort(phantom: Path, root: Path, n: int = 4) -> tuple[Path, Path]:
    """``root/slides/s0.svs``... (copies of ``phantom``) and ``root/mask.geojson`` (one tile)."""
    slides = root / "slides"
    slides.mkdir(parents=True)
    for i in range(n):
        shutil.copy(phantom, slides / f"s{i}.svs")
    mask = root / "mask.geojson"
    square = [[200, 200], [300, 200], [300, 300], [200, 300], [200, 200]]
    mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [square]}}]}))
    return slides, mask


def object_ids(out: Path, stem: str) -> set[str]:
    """The object UUIDs of one slide's object file."""
    return set(pq.read_table(out / f"{stem}.parquet", columns=["uuid"]).column("uuid").to_pylist())


def leftovers(out: Path) -> list[str]:
    """Hidden entries (claims, staging folders, swap journals) left in an output folder."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))
