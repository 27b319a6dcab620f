"""Grid features: patches on a regular grid over the detected tissue of whole slides."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cerberus_cli.slides.scale import scaled_size
from cerberus_cli.slides.slide import Slide, open_slide
from cerberus_cli.slides.tissue import detect_tissue
from cerberus_cli.transfer.extractor import (
    FeaturesSummary,
    make_extractor,
    read_rows,
    should_skip,
    slide_output,
)
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.forward import Progress
from cerberus_cli.transfer.options import FeaturesOptions
from cerberus_cli.transfer.patches import PatchReader

#: Patch side at the model's mpp when neither --patch-um nor --patch-px is given.
DEFAULT_GRID_PX = 224
_NAMESPACE = uuid.UUID("4f6c1a52-9a0e-4b8e-a7f1-5d3c2b1e0f11")


def grid_rows(slide: Slide, model_mpp: float, side: int, stride: int,
              min_tissue: float) -> list[dict[str, Any]]:
    """One row per grid patch whose tissue fraction is at least ``min_tissue``.

    ``side`` and ``stride`` are px at ``model_mpp``; ``x``, ``y`` are the level-0 centre.
    """
    tissue = detect_tissue(slide)
    width, height = scaled_size(slide, model_mpp)
    s = model_mpp / slide.mpp                 # level-0 px per model px
    t = model_mpp / tissue.mpp                # mask px per model px
    stem = Path(str(slide.path)).stem
    xs = range(0, max(1, width - side + 1), stride)
    ys = range(0, max(1, height - side + 1), stride)
    rows = []
    for y0 in ys:
        for x0 in xs:
            window = tissue.mask[int(y0 * t):max(int(y0 * t) + 1, int((y0 + side) * t)),
                                 int(x0 * t):max(int(x0 * t) + 1, int((x0 + side) * t))]
            if window.size == 0 or window.mean() < min_tissue:
                continue
            cx, cy = (x0 + side / 2) * s, (y0 + side / 2) * s
            rows.append({"slide": str(slide.path), "uuid": str(uuid.uuid5(_NAMESPACE, f"{stem}:{cx}:{cy}")),
                         "task": "grid", "class_name": None, "x": float(cx), "y": float(cy),
                         "mpp": float(slide.mpp)})
    return rows


def extract_grid(slides: list[str], out_dir: Path, options: FeaturesOptions,
                 progress: Progress | None = None) -> FeaturesSummary:
    """Grid features of each slide into ``OUT/SLIDE.features.parquet``."""
    extractor = make_extractor(options, "grid")
    mpp = extractor.encoder.mpp
    side = options.patch_side(mpp) or DEFAULT_GRID_PX
    stride = max(1, round(options.stride_um / mpp)) if options.stride_um else side
    summary = FeaturesSummary(dim=extractor.dim)
    for path in slides:
        out = slide_output(out_dir, path)
        meta = dict(extractor.meta, input_px=side, input_um=side * mpp,
                    grid={"stride_px": stride, "min_tissue": options.min_tissue})
        meta["inputs"] = {"slide": str(Path(path).resolve())}
        if should_skip(out, meta, options.overwrite):
            summary.skipped.append(out)
            continue
        with open_slide(path, options.backend, options.mpp) as slide:
            rows = grid_rows(slide, mpp, side, stride, options.min_tissue)
        reader = PatchReader(mpp, side, None, options.backend, side)
        feats = read_rows(rows, reader, extractor, progress) if rows else \
            np.zeros((0, extractor.dim), np.float32)
        table = pd.DataFrame(rows, columns=["slide", "uuid", "task", "class_name", "x", "y", "mpp"])
        summary.written.append(write_features(out, table, feats, meta, options.overwrite))
        summary.rows += len(rows)
    return summary
