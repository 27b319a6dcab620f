"""Nuclei post-processing variants scored on a model's saved maps of CoNSeP images.

    cerberus segment ../shared/real-train/nuclei-consep-train/images --mpp 0.25 \
        --tissue-method all --save-maps --no-overlay -o consep_train
    python model-training/nuclei_pp_sweep.py consep_train ../shared/real-train/nuclei-consep-train/instances

Each variant changes one rule of the reference nuclei post-processing (mask threshold,
marker threshold, markers from inner minus boundary, erosions, smallest marker) and is
scored by PQ on the model grid (0.5 um/px; the 0.25 um/px truth resampled by nearest
neighbour), which ranks the variants without the evaluate runner's polygon round trip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import zarr
from PIL import Image
from skimage.segmentation import watershed

from cerberus_cli.metrics.pq import panoptic_quality
from cerberus_cli.postprocess.instances import as_probability, label_components, relabel_sequential

#: Channels of the nuclei head in segment's saved maps (after gland and lumen).
NUCLEI_INNER, NUCLEI_BOUNDARY = 4, 5
KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def instances(inner: np.ndarray, boundary: np.ndarray, mask_t: float = 0.5, marker_t: float = 0.5,
              marker: str = "inner", erosions: int = 1, min_marker: int = 5, min_size: int = 10) -> np.ndarray:
    """The reference rule (defaults) with one of its parts changed."""
    pi, pb = as_probability(inner), as_probability(boundary)
    mask = ((pi + pb) > mask_t).astype(np.uint8)
    if erosions:
        mask = cv2.erode(mask, KERNEL, iterations=erosions)
    seeds = (pi - pb) > marker_t if marker == "inner-boundary" else pi > marker_t
    markers, n = label_components(seeds, min_marker)
    if n == 0:
        return np.zeros(inner.shape, np.int32)
    return relabel_sequential(watershed(-pi, markers, mask=mask.astype(bool)), min_size)


VARIANTS: dict[str, dict] = {
    "reference": {},
    **{f"marker > {t}": {"marker_t": t} for t in (0.3, 0.4, 0.6, 0.7, 0.8, 0.9)},
    **{f"inner - boundary > {t}": {"marker_t": t, "marker": "inner-boundary"} for t in (0.1, 0.2, 0.3, 0.5)},
    **{f"mask > {t}": {"mask_t": t} for t in (0.4, 0.6, 0.7)},
    "no erosion": {"erosions": 0},
    "two erosions": {"erosions": 2},
    "markers from 2 px": {"min_marker": 2},
}


def main() -> None:
    maps_dir, truth_dir = Path(sys.argv[1]), Path(sys.argv[2])
    items = []
    for z in sorted(maps_dir.glob("*.maps.zarr")):
        stem = z.name[: -len(".maps.zarr")]
        truth = np.array(Image.open(truth_dir / f"{stem}.png")).astype(np.int32)
        h, w = truth.shape[0] // 2, truth.shape[1] // 2
        truth = cv2.resize(truth.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
        maps = zarr.open_group(str(z), mode="r")["s0"]
        items.append((maps[NUCLEI_INNER, :h, :w], maps[NUCLEI_BOUNDARY, :h, :w], truth))
    for name, kw in VARIANTS.items():
        scores, n_pred, n_true = [], 0, 0
        for inner, boundary, truth in items:
            pred = instances(inner, boundary, **kw)
            scores.append(panoptic_quality(truth, pred))
            n_pred += int(pred.max())
            n_true += len(np.unique(truth)) - 1
        pq = np.mean([c.pq for c in scores])
        dq = np.mean([c.dq for c in scores])
        print(f"{name:24s} PQ {pq:.3f}  DQ {dq:.3f}  objects {n_pred} for {n_true} nuclei", flush=True)


if __name__ == "__main__":
    main()
