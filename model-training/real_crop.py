"""Real H&E crop with nucleus polygons -> a truth object file `cerberus evaluate` reads.

    python model-training/real_crop.py POLYGONS.parquet IMAGE OUT_DIR [--crop X,Y,W,H]

POLYGONS is a GeoParquet of nucleus polygons in pixel coordinates of IMAGE with a
``class_name`` column (connective, inflammatory, neoplastic; the histolytics sample
``hgsc_stromal_cells.parquet``). Writes ``OUT_DIR/real.png`` (the image, cropped with
``--crop``) and ``OUT_DIR/real.truth.parquet`` (the polygons clipped to it, shifted to
its origin, as cerberus nuclei records at 0.5 um/px).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import geopandas as gpd
import shapely

from cerberus_cli.core.records import make_records, object_uuid
from cerberus_cli.core.vocabulary import NUCLEUS_TYPES
from cerberus_cli.outputs.geoparquet import write_geoparquet

MPP = 0.5
CLASSES = {"connective": "connective", "inflammatory": "lymphocyte", "neoplastic": "epithelial"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-training/real_crop.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("polygons")
    parser.add_argument("image")
    parser.add_argument("out_dir")
    parser.add_argument("--crop", help="X,Y,W,H in image px (default: the whole image).")
    args = parser.parse_args(argv)
    img = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if img is None:
        print(f"error: {args.image}: not a readable image", file=sys.stderr)
        return 2
    x, y, w, h = (map(int, args.crop.split(",")) if args.crop else (0, 0, img.shape[1], img.shape[0]))
    img = img[y:y + h, x:x + w]
    frame = gpd.read_parquet(args.polygons)
    geoms = shapely.transform(shapely.intersection(frame.geometry.values, shapely.box(x, y, x + w, y + h)),
                              lambda c: c - (x, y))
    names = [CLASSES.get(str(n), "no-label") for n in frame["class_name"]]
    keep = [i for i, g in enumerate(geoms)
            if not g.is_empty and g.area > 0 and g.geom_type in ("Polygon", "MultiPolygon")]
    ids = [next(i for i, c in enumerate(NUCLEUS_TYPES) if c.name == names[k]) for k in keep]
    geo = [shapely.make_valid(geoms[k]) for k in keep]
    uuids = [object_uuid("nuclei", g.centroid.x, g.centroid.y, "real") for g in geo]
    records = make_records(geo, "nuclei", ids, [names[k] for k in keep], [1.0] * len(keep), MPP, uuids)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "real.png"), img)
    write_geoparquet(out / "real.truth.parquet", records, overwrite=True, slide="real")
    print(f"{len(records)} nuclei, {w}x{h} px -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
