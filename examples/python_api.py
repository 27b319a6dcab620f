"""Segment slides from Python, then count nuclei per slide and class (geopandas, DuckDB).

    python examples/python_api.py SLIDES_DIR OUT_DIR [--device cuda] [--model M] [--mask M]

The slides go to one ``cerberus_cli.segment`` call, which loads the model once (a loop
of one call per slide works too, loading it each time) and reports each slide as it
finishes through a ``RunEvents`` object: the library itself never prints. A slide whose
outputs are already complete in OUT_DIR is skipped, so the script can simply run again.
The object files are then read twice: per slide with geopandas, and all at once with a
DuckDB query over the GeoParquet files. The exit status is 1 when a slide failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import geopandas as gpd

from cerberus_cli import CerberusError, RunEvents, SegmentOptions, segment

SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".bif"}


class PrintSlides(RunEvents):
    """Progress: one line per finished slide."""

    def slide_finished(self, outcome):
        print(f"{Path(outcome.slide).name}: {outcome.status} {outcome.message}".rstrip(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", type=Path, help="folder of slides")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--mask", default=None, help="tissue mask used for every slide")
    parser.add_argument("--tile", type=int, default=720, help="kept tile side, px at the model resolution")
    parser.add_argument("--margin", type=int, default=152, help="context around each tile, px")
    parser.add_argument("--workers", type=int, default=2, help="tile readers and post-processing workers")
    args = parser.parse_args()

    if not args.slides.is_dir():
        print(f"error: {args.slides}: not a folder", file=sys.stderr)
        return 2
    slides = sorted(p for p in args.slides.iterdir() if p.suffix.lower() in SUFFIXES)
    if not slides:
        print(f"error: no slides in {args.slides}", file=sys.stderr)
        return 2
    try:
        options = SegmentOptions(device=args.device, model=args.model, mask=args.mask, tile=args.tile,
                                 margin=args.margin, workers=args.workers, post_workers=args.workers,
                                 overlay=False)
    except CerberusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        summary = segment([str(p) for p in slides], args.out, options, events=PrintSlides())
    except CerberusError as exc:  # nothing could run at all: a bad model, an unusable OUT
        print(f"error: {exc}", file=sys.stderr)
        return 2
    object_files: dict[str, Path] = {}
    for outcome in summary.slides:
        if outcome.status in ("done", "done with damage", "skipped"):
            stem = Path(outcome.slide).stem
            object_files[stem] = args.out / f"{stem}.parquet"

    # Per slide with geopandas: the object table of each slide (level-0 pixel coordinates).
    print("\nnuclei per slide and class (geopandas)")
    for name, path in object_files.items():
        objects = gpd.read_parquet(path)
        nuclei = objects[objects["task"] == "nuclei"]
        for class_name, count in nuclei["class_name"].value_counts().sort_index().items():
            print(f"{name}\t{class_name}\t{count}")

    # The whole cohort at once with DuckDB: SQL straight over the GeoParquet files.
    if object_files:
        files = [str(p) for p in object_files.values()]
        rows = duckdb.sql(
            "SELECT class_name, count(*) AS nuclei, round(avg(area_um2), 1) AS mean_area_um2 "
            "FROM read_parquet($files) WHERE task = 'nuclei' GROUP BY class_name ORDER BY class_name",
            params={"files": files}).fetchall()
        print(f"\nnuclei per class over {len(files)} slides (DuckDB)")
        for class_name, count, area in rows:
            print(f"{class_name}\t{count}\t{area} um2")
    return 0 if summary.ok else 1


if __name__ == "__main__":  # required: post-processing workers are started with spawn
    sys.exit(main())
