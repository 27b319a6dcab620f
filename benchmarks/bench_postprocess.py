"""Post-processing and writer throughput on synthetic maps.

Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/bench_postprocess.py

Prints: nuclei post-processing throughput (megapixels of map per second) on a
2048x2048 map with ~5000 nuclei, gland+lumen post-processing at the model
resolution (0.5 um/px) and at half resolution (1 um/px), GeoParquet and QuPath
GeoJSON write rates (records/s) and the QC overlay time for 1e5 objects.
Each figure is the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from cerberus_cli.model.config import reference_config
from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter
from cerberus_cli.outputs.geoparquet import GeoParquetWriter
from cerberus_cli.outputs.overlay import OverlayCanvas
from cerberus_cli.postprocess.chunks import (
    ChunkMaps,
    process_chunk,
    required_margin,
)
from cerberus_cli.postprocess.instances import (
    gland_instances,
    lumen_instances,
    nuclei_instances,
)
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.synthetic.maps import instance_maps, paint_ellipses, type_map


def best(fn, repeat: int) -> tuple[float, object]:
    """Fastest wall time of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def peak_mib(fn) -> float:
    """Peak traced allocation (numpy included) while running ``fn``, MiB."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def mean_best_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean over ground-truth objects of the best IoU with a predicted object."""
    n, m = int(gt.max()), int(pred.max())
    inter = np.bincount(gt.ravel().astype(np.int64) * (m + 1) + pred.ravel(),
                        minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    union = inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter
    return float((inter / np.maximum(union, 1))[1:, 1:].max(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="map side in px (default 2048)")
    ap.add_argument("--nuclei", type=int, default=5000)
    ap.add_argument("--glands", type=int, default=40)
    ap.add_argument("--records", type=int, default=200_000, help="records written")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    mpix = args.size * args.size / 1e6
    cfg = reference_config()
    opt = PostprocessOptions()

    # --- nuclei -------------------------------------------------------------------------
    nuc = paint_ellipses(shape, args.nuclei, (3.0, 7.0), rng, gap=1)
    nprob = (instance_maps(nuc, 3) * 255).round().astype(np.uint8)
    ntypes, _ = type_map(nuc, 7, rng)
    print(f"map {args.size}x{args.size} ({mpix:.2f} MP), {int(nuc.max())} nuclei, uint8 maps")
    t, labels = best(lambda: nuclei_instances(nprob[0], nprob[1], opt), args.repeat)
    print(f"nuclei labels (threshold + watershed): {t:.2f} s  {mpix / t:.1f} MP/s  "
          f"{int(labels.max())} objects")
    chunk = ChunkMaps(origin=(0, 0), core=(0, 0) + shape[::-1], prob={"nuclei": nprob},
                      types={"nuclei_type": ntypes})
    ncfg = cfg.with_heads(["nuclei", "nuclei_type"])
    t, recs_nuclei = best(lambda: process_chunk(chunk, ncfg, opt, 2.0, 0.25), args.repeat)
    recs = recs_nuclei
    print(f"nuclei full chunk (labels + vote + polygons + records): {t:.2f} s  "
          f"{mpix / t:.1f} MP/s  {len(recs) / t:.0f} objects/s")
    print(f"nuclei full chunk peak traced memory: "
          f"{peak_mib(lambda: process_chunk(chunk, ncfg, opt, 2.0, 0.25)):.0f} MiB")

    # --- glands and lumina ----------------------------------------------------------------
    gl = paint_ellipses(shape, args.glands, (40, 120), rng, gap=14)
    lu = paint_ellipses(shape, args.glands, (0, 0), rng, inside=gl, inset=20)
    gprob, lprob = instance_maps(gl, 11), instance_maps(lu, 3)
    gtypes, _ = type_map(gl, 3, rng)
    print(f"{int(gl.max())} glands (radii 40-120 px), {int(lu.max())} lumina")
    gcfg = cfg.with_heads(["gland", "gland_type", "lumen"])
    gchunk = ChunkMaps(origin=(0, 0), core=(0, 0) + shape[::-1],
                       prob={"gland": gprob, "lumen": lprob}, types={"gland_type": gtypes})
    for f, name in ((1, "0.5 um/px (full)"), (2, "1 um/px (2x down)")):
        o = dataclasses.replace(opt, gland_downsample=f)

        def labels_only(o=o):
            g = gland_instances(gprob[0], gprob[1], o)
            return g, lumen_instances(lprob[0], lprob[1], g, o)

        t, (g, lab) = best(labels_only, args.repeat)
        t2, recs = best(lambda o=o: process_chunk(gchunk, gcfg, o, 2.0, 0.25), args.repeat)
        print(f"gland+lumen at {name}: labels {t:.2f} s ({mpix / t:.1f} MP/s), full chunk "
              f"{t2:.2f} s ({mpix / t2:.1f} MP/s), {int(g.max())} glands {int(lab.max())} lumina, "
              f"mean IoU with truth: glands {mean_best_iou(gl, g):.3f} "
              f"lumina {mean_best_iou(lu, lab):.3f}")

    # --- one slide chunk of the reference model: all heads, gland-sized margin ---------
    margin = required_margin(opt)
    side = args.size - 2 * margin
    if side > 0:
        full = ChunkMaps(origin=(0, 0), core=(margin, margin, margin + side, margin + side),
                         prob={"gland": gprob, "lumen": lprob, "nuclei": nprob},
                         types={"gland_type": gtypes, "nuclei_type": ntypes})
        t, recs = best(lambda: process_chunk(full, cfg, opt, 2.0, 0.25), args.repeat)
        core_mp = side * side / 1e6
        print(f"reference-model chunk: core {side}x{side} + margin {margin}: {t:.2f} s, "
              f"{core_mp / t:.2f} MP of core/s, {len(recs)} objects owned")

    # --- writers --------------------------------------------------------------------------
    base = list(recs_nuclei)
    reps = -(-args.records // len(base))
    batches = [base] * reps
    total = len(base) * reps
    with tempfile.TemporaryDirectory() as tmp:
        def parquet():
            with GeoParquetWriter(Path(tmp) / "o.parquet", {"bench": True},
                                  overwrite=True) as w:
                for b in batches:
                    w.write(b)

        t, _ = best(parquet, args.repeat)
        size = (Path(tmp) / "o.parquet").stat().st_size
        print(f"GeoParquet write: {total} records {t:.2f} s  {total / t:,.0f} records/s  "
              f"{size / total:.0f} B/record")
        for gz in (False, True):
            name = "o.geojson.gz" if gz else "o.geojson"

            def geojson(name=name, gz=gz):
                with QuPathGeoJSONWriter(Path(tmp) / name, gzip=gz, overwrite=True) as w:
                    for b in batches:
                        w.write(b)

            t, _ = best(geojson, 1)
            size = (Path(tmp) / name).stat().st_size
            print(f"GeoJSON{' (gzip)' if gz else ''} write: {total / t:,.0f} records/s  "
                  f"{size / total:.0f} B/record")

    # --- overlay --------------------------------------------------------------------------
    many = (base * (-(-100_000 // len(base))))[:100_000]
    canvas = OverlayCanvas(np.zeros((1024, 1024, 3), np.uint8), scale=1024 / (2.0 * args.size))
    t, _ = best(lambda: canvas.draw(many), args.repeat)
    print(f"overlay: {len(many)} objects drawn in {t:.2f} s")


if __name__ == "__main__":
    main()
