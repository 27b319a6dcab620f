"""Speed and memory of the phantom generator, on one CPU core.

Usage:
    python benchmarks/bench_synth.py                       # 8192 x 8192 slide + 50 tiles
    python benchmarks/bench_synth.py --size 4096x4096 --tiles 20 --mpp 0.25

Prints one line per measurement. Results are recorded in benchmarks/synth.md.
"""

from __future__ import annotations

import argparse
import os

# One core: pin the thread pools before numpy / OpenCV start them.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from cerberus_cli.synthetic.dataset import write_tile_dataset  # noqa: E402
from cerberus_cli.synthetic.slide import parse_size, write_phantom_slide  # noqa: E402
from cerberus_cli.synthetic.tiles import render_tile  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="8192x8192", help="slide WIDTHxHEIGHT")
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tiles", type=int, default=50, help="tiles for the dataset measurement")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    width, height = parse_size(args.size)

    render_tile(448, 0)  # warm-up (imports, caches)
    t = time.perf_counter()
    n = 20
    for s in range(n):
        render_tile(448, 1000 + s)
    print(f"render_tile 448x448: {(time.perf_counter() - t) / n * 1000:.0f} ms per tile")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_tile_dataset(Path(tmp) / "ds", count=args.tiles, size=448, seed=args.seed)
        dt = time.perf_counter() - t
        print(f"tile dataset: {args.tiles} tiles x (nuclei+gland+lumen) + {args.tiles} tissue patches "
              f"in {dt:.1f} s ({dt / args.tiles:.2f} s per tile and patch)")

        out = Path(tmp) / "phantom.svs"
        t = time.perf_counter()
        write_phantom_slide(out, (width, height), seed=args.seed, mpp=args.mpp)
        dt = time.perf_counter() - t
        mpx = width * height / 1e6
        size_mb = out.stat().st_size / 1e6
        truth_mb = out.with_name("phantom.truth.parquet").stat().st_size / 1e6
        counts = info_counts(out)
        print(f"slide {width}x{height} at {args.mpp} um/px with ground truth: {dt:.1f} s "
              f"({mpx / dt:.2f} Mpx/s), SVS {size_mb:.1f} MB, truth parquet {truth_mb:.1f} MB, "
              f"{counts}")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def info_counts(svs: Path) -> str:
    import json
    info = json.loads(svs.with_name(svs.stem + ".truth.json").read_text())
    c = info["counts"]
    return (f"{sum(c.get('nuclei', {}).values())} nuclei, {sum(c.get('gland', {}).values())} glands, "
            f"{sum(c.get('lumen', {}).values())} lumina")


if __name__ == "__main__":
    main()
