"""Gland post-processing settings scored on a model's saved maps of GlaS images.

    cerberus segment ../shared/real-train/gland-glas-train/images --mpp 0.62005 \
        --tissue-method all --save-maps --no-overlay -o glas_train
    python model-training/gland_pp_sweep.py glas_train ../shared/real-train/gland-glas-train/instances \
        [--thresholds 0.4,0.5 --min-sizes 2000,4000 --kernels 11,15]

Each setting is a ``PostprocessOptions`` of segment (``--gland-threshold``,
``--gland-min-size-px``, ``--gland-kernel-px``) run through the product's own gland
post-processing, and is scored by the GlaS object F1 and object Dice pooled over the
images, on the model grid (the truth resampled to it by nearest neighbour), which ranks
the settings without the evaluate runner's polygon round trip. Choose on train images,
measure the choice on test A.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from functools import reduce
from operator import add
from pathlib import Path

import cv2
import numpy as np
import zarr
from PIL import Image

from cerberus_cli.metrics.glas import glas_metrics
from cerberus_cli.postprocess.instances import gland_instances
from cerberus_cli.postprocess.options import PostprocessOptions

#: Channels of the gland head in segment's saved maps (inner, boundary).
GLAND_INNER, GLAND_BOUNDARY = 0, 1


def load(maps_dir: Path, truth_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(inner, boundary, truth on the model grid) of every image with saved maps."""
    items = []
    for z in sorted(maps_dir.glob("*.maps.zarr")):
        stem = z.name[: -len(".maps.zarr")]
        group = zarr.open_group(str(z), mode="r")
        extent = group.attrs["cerberus"]["valid_extent"]
        h, w = extent["y"][1], extent["x"][1]
        truth = np.array(Image.open(truth_dir / f"{stem}.png")).astype(np.float32)
        truth = cv2.resize(truth, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
        maps = group["s0"]
        items.append((np.asarray(maps[GLAND_INNER, :h, :w]), np.asarray(maps[GLAND_BOUNDARY, :h, :w]),
                      truth))
    return items


def _numbers(kind: type) -> Callable[[str], list]:
    return lambda text: [kind(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("maps_dir", type=Path)
    p.add_argument("truth_dir", type=Path)
    p.add_argument("--thresholds", type=_numbers(float), default=[0.4, 0.5, 0.55, 0.6, 0.7, 0.8])
    p.add_argument("--min-sizes", type=_numbers(int), default=[400, 1000, 2000, 4000])
    p.add_argument("--kernels", type=_numbers(int), default=[11, 15])
    args = p.parse_args()
    items = load(args.maps_dir, args.truth_dir)
    print(f"{len(items)} images", flush=True)
    for t, size, kernel in itertools.product(args.thresholds, args.min_sizes, args.kernels):
        opts = PostprocessOptions(gland_threshold=t, gland_min_size_px=size, gland_kernel_px=kernel)
        counts = reduce(add, (glas_metrics(truth, gland_instances(i, b, opts), hausdorff=False)
                              for i, b, truth in items))
        mark = "  (segment's default)" if opts == PostprocessOptions() else ""
        print(f"threshold {t:.2f}  min size {size:5d}  kernel {kernel:2d}:  F1 {counts.f1:.3f} "
              f"(P {counts.precision:.3f} R {counts.recall:.3f})  Dice {counts.object_dice:.3f}{mark}",
              flush=True)


if __name__ == "__main__":
    main()
