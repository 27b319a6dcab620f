"""Speed of the metrics on a 1024 x 1024 map with about 1,000 nuclei.

Prints the median time of each metric over ``--repeat`` runs, and, for scale, the
time of the naive approach (one full-image pass per true instance) that the common
reference code takes to build the same intersection table. Ends with a folder
evaluation and a phantom slide evaluated as polygons.

    nice -n 10 .venv/bin/python benchmarks/bench_metrics.py [--size 1024] [--n 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import shapely
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from cerberus_cli.metrics import (
    aji_from_overlap,
    aji_plus_from_overlap,
    class_pq_counts,
    compact,
    detection_counts,
    overlap_from_labels,
    overlap_from_maps,
    panoptic_quality,
    pq_counts,
)
from cerberus_cli.metrics.evaluate import evaluate, evaluate_slides
from cerberus_cli.metrics.labels import centroids
from cerberus_cli.metrics.polygons import overlap_from_polygons
from cerberus_cli.synthetic.slide import write_phantom_slide


def nuclei_map(size: int, n: int, seed: int) -> np.ndarray:
    """Touching, irregular nuclei: a watershed of random seeds limited to ~7 px radius."""
    rng = np.random.default_rng(seed)
    markers = np.zeros((size, size), np.int32)
    pts = rng.integers(0, size, (n, 2))
    markers[pts[:, 0], pts[:, 1]] = np.arange(1, n + 1)
    dist = ndi.distance_transform_edt(markers == 0)
    return watershed(dist, markers, mask=dist < 7).astype(np.int32)


def predicted(true: np.ndarray, seed: int) -> np.ndarray:
    """The truth shifted by 2 px, with 5 % of nuclei dropped and ids shuffled."""
    rng = np.random.default_rng(seed)
    pred = np.roll(true, (2, 1), axis=(0, 1))
    ids = np.unique(pred[pred > 0])
    pred[np.isin(pred, rng.choice(ids, len(ids) // 20, replace=False))] = 0
    perm = np.concatenate([[0], rng.permutation(true.max()) + 1])
    return perm[pred]


def naive_table(true: np.ndarray, pred: np.ndarray) -> int:
    """Intersections by one full-image pass per true instance (reference-code style)."""
    pairs = 0
    for i in np.unique(true)[1:]:
        pairs += np.unique(pred[true == i]).size
    return pairs


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--slide", type=int, default=3072, help="Side of the phantom slide case.")
    args = ap.parse_args()

    true = nuclei_map(args.size, args.n, 0)
    pred = predicted(true, 1)
    rng = np.random.default_rng(2)
    lt, lp = compact(true), compact(pred)
    ov = overlap_from_labels(lt, lp)
    tc, tc_pred = rng.integers(1, 7, lt.n), rng.integers(1, 7, lp.n)
    txy, pxy = centroids(lt), centroids(lp)
    tpoly = _boxes(lt)
    ppoly = _boxes(lp)

    print(f"map {args.size}x{args.size}: {lt.n} true, {lp.n} predicted instances, "
          f"{ov.inter.size} touching pairs; PQ {panoptic_quality(true, pred).pq:.4f}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    cases = [
        ("PQ end to end (relabel + table + match), IoU > 0.5", lambda: panoptic_quality(true, pred)),
        ("PQ end to end, IoU > 0.3 (Hungarian)", lambda: panoptic_quality(true, pred, 0.3)),
        ("overlap table from raw maps", lambda: overlap_from_maps(true, pred)),
        ("PQ matching only, from the table", lambda: pq_counts(ov)),
        ("AJI from the table", lambda: aji_from_overlap(ov)),
        ("AJI+ from the table", lambda: aji_plus_from_overlap(ov)),
        ("mPQ counts, 6 classes, from the table", lambda: class_pq_counts(ov, tc, tc_pred, range(1, 7))),
        ("detection: centroid pairing r=6 + counts", lambda: detection_counts(txy, pxy, tc, tc_pred)),
        ("polygon overlap (STRtree), bounding boxes", lambda: overlap_from_polygons(tpoly, ppoly)),
    ]
    print(f"{'case':58s} {'median s':>10s}")
    for name, fn in cases:
        print(f"{name:58s} {median_time(fn, args.repeat):10.4f}")
    t = median_time(lambda: naive_table(true, pred), max(1, args.repeat // 3))
    print(f"{'naive table: one full-image pass per true instance':58s} {t:10.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        gt, pr = Path(tmp, "gt"), Path(tmp, "pred")
        gt.mkdir(), pr.mkdir()
        for i in range(10):
            t_i = nuclei_map(args.size, args.n, 10 + i)
            cv2.imwrite(str(gt / f"img{i}.png"), t_i.astype(np.uint16))
            np.save(pr / f"img{i}.npy", predicted(t_i, 20 + i))
        no_class = ["dice", "pq", "aji", "aji+", "detection"]  # PNG maps carry no classes
        t = median_time(lambda: evaluate(gt, pr, no_class, "gland"), max(1, args.repeat // 3))
        print(f"{'evaluate(): 10 PNG/NPY pairs, class-free metrics, per image':58s} {t / 10:10.4f}")
        slide_case(Path(tmp), args.slide, max(1, args.repeat // 3))


def slide_case(tmp: Path, side: int, repeat: int) -> None:
    """A phantom slide's truth against a copy with 10 % of objects dropped, moved 1 px."""
    truth = tmp / "ph.truth.parquet"
    write_phantom_slide(tmp / "ph.svs", size=(side, side), seed=5)
    gdf = gpd.read_parquet(truth)
    keep = np.random.default_rng(0).random(len(gdf)) > 0.1
    pred = gdf[keep].copy()
    pred["geometry"] = shapely.transform(pred.geometry.values, lambda c: c + 1.0)
    pred.to_parquet(tmp / "pred.parquet")
    n = int((gdf["task"] == "nuclei").sum())
    t = median_time(lambda: evaluate_slides([truth], [tmp / "pred.parquet"], "nuclei", ["all"]),
                    repeat)
    name = f"evaluate_slides(): {side}x{side} phantom, {n} nuclei, all"
    print(f"{name:58s} {t:10.4f}")


def _boxes(labels) -> np.ndarray:
    """Bounding box polygon of every instance (a polygon set of realistic size)."""
    objs = ndi.find_objects(labels.map)
    return np.array([shapely.box(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in objs if s])


if __name__ == "__main__":
    main()
