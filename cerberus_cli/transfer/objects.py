"""Object features: one row per segmented nucleus, gland or lumen, pooled under the
object's own mask on the encoder maps; one forward pass per tile, not per object.

Each object belongs to the tile holding its centroid; the tile is read with a margin so
that objects crossing its edge are still seen whole (up to the margin).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from shapely.geometry import MultiPolygon, Polygon

from cerberus_cli.core.errors import InputError
from cerberus_cli.outputs.read import read_objects
from cerberus_cli.slides.scale import read_scaled
from cerberus_cli.slides.slide import open_slide
from cerberus_cli.transfer.extract import (
    Extractor,
    FeaturesSummary,
    make_extractor,
    should_skip,
    slide_output,
)
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.forward import Progress
from cerberus_cli.transfer.options import FeaturesOptions
from cerberus_cli.transfer.pooling import masked_pool

COLUMNS = ["slide", "uuid", "task", "class_id", "class_name", "x", "y", "label", "group"]


def objects_file(spec: str, slide: str | os.PathLike, n_slides: int) -> Path:
    """The object file of ``slide``: ``spec`` itself, or ``spec/<stem>.parquet`` for a folder."""
    p = Path(spec)
    if p.is_dir():
        found = p / f"{Path(slide).stem}.parquet"
        if not found.is_file():
            raise InputError(f"{found}: no object file for slide {slide}")
        return found
    if not p.is_file():
        raise InputError(f"{p}: no such object file")
    if n_slides > 1:
        raise InputError(f"{p}: one object file for {n_slides} slides; give a folder of SLIDE.parquet")
    return p


def _rings(geom) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    polys = geom.geoms if isinstance(geom, MultiPolygon) else [geom] if isinstance(geom, Polygon) else []
    return [(np.asarray(p.exterior.coords), [np.asarray(r.coords) for r in p.interiors]) for p in polys]


def object_weights(geom, origin: tuple[float, float], s: float, strides: list[int],
                   shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per level, the fraction of each feature cell inside the object (tile px = level-0 / s)."""
    coarse = max(strides)
    rings = [((ext / s) - origin, [(h / s) - origin for h in holes]) for ext, holes in _rings(geom)]
    out = [np.zeros(shape, np.float32) for shape in shapes]
    if not rings:
        return out
    allpts = np.concatenate([e for e, _ in rings])
    bx0 = max(0, int(math.floor(allpts[:, 0].min() / coarse)) * coarse)
    by0 = max(0, int(math.floor(allpts[:, 1].min() / coarse)) * coarse)
    bx1 = max(bx0 + coarse, int(math.ceil(allpts[:, 0].max() / coarse + 1e-9)) * coarse)
    by1 = max(by0 + coarse, int(math.ceil(allpts[:, 1].max() / coarse + 1e-9)) * coarse)
    local = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    shift = np.array([bx0, by0])
    for ext, holes in rings:
        cv2.fillPoly(local, [np.round(ext - shift - 0.5).astype(np.int32)], 1)
        for hole in holes:
            cv2.fillPoly(local, [np.round(hole - shift - 0.5).astype(np.int32)], 0)
    cx, cy = allpts[:, 0].mean(), allpts[:, 1].mean()
    for k, (st, (h, w)) in enumerate(zip(strides, shapes)):
        cells = local.reshape(local.shape[0] // st, st, local.shape[1] // st, st).mean(axis=(1, 3))
        i0, j0 = by0 // st, bx0 // st
        i1, j1 = min(h, i0 + cells.shape[0]), min(w, j0 + cells.shape[1])
        if i1 > i0 and j1 > j0:
            out[k][i0:i1, j0:j1] = cells[:i1 - i0, :j1 - j0]
        if out[k].sum() <= 0:
            # Too small (or clipped) to cover a cell: the cell of its centre stands in.
            out[k][min(h - 1, max(0, int(cy // st))), min(w - 1, max(0, int(cx // st)))] = 1.0
    return out


def slide_object_features(path: str, objects: pd.DataFrame, extractor: Extractor,
                          options: FeaturesOptions, progress: Progress | None) -> np.ndarray:
    """(N, D) features of ``objects`` (level-0 geometry) of one slide."""
    enc, fwd = extractor.encoder, extractor.forward
    mpp, tile, margin = enc.mpp, options.tile_px, options.margin
    feats = np.zeros((len(objects), extractor.dim), np.float32)
    with open_slide(path, options.backend, options.mpp) as slide:
        s = mpp / slide.mpp
        tx = (objects["centroid_x"].to_numpy() / s // tile).astype(int)
        ty = (objects["centroid_y"].to_numpy() / s // tile).astype(int)
        keys = pd.Series(list(zip(ty, tx)))
        tiles = keys.groupby(keys).indices
        done = 0
        for (j, i), idx in tiles.items():
            x0, y0 = i * tile - margin, j * tile - margin
            side = tile + 2 * margin
            img = read_scaled(slide, x0, y0, side, side, mpp)
            maps = fwd.maps([img])
            strides = [enc.stride(name) for name in options.layers]
            shapes = [(maps[name].shape[-2], maps[name].shape[-1]) for name in options.layers]
            weights = [object_weights(objects.geometry.iloc[k], (x0, y0), s, strides, shapes)
                       for k in idx]
            parts = []
            for level, name in enumerate(options.layers):
                wts = torch.from_numpy(np.stack([w[level] for w in weights])).to(fwd.device)
                parts.append(masked_pool(maps[name][0].float(), wts, options.pooling))
            feats[idx] = torch.cat(parts, dim=1).cpu().numpy()
            done += len(idx)
            if progress is not None:
                progress(done, len(objects))
    return feats


def extract_objects(slides: list[str], out_dir: Path, options: FeaturesOptions,
                    progress: Progress | None = None) -> FeaturesSummary:
    """Object features of each slide into ``OUT/SLIDE.features.parquet``."""
    extractor = make_extractor(options, "objects")
    summary = FeaturesSummary(dim=extractor.dim)
    for path in slides:
        src = objects_file(str(options.objects), path, len(slides))
        out = slide_output(out_dir, path)
        meta = dict(extractor.meta, input_px=options.tile_px + 2 * options.margin,
                    input_um=(options.tile_px + 2 * options.margin) * extractor.encoder.mpp,
                    objects={"tasks": list(options.tasks), "tile_px": options.tile_px,
                             "margin_px": options.margin, "pooling": "masked " + options.pooling})
        meta["inputs"] = {"slide": str(Path(path).resolve()), "objects": str(src.resolve())}
        if should_skip(out, meta, options.overwrite):
            summary.skipped.append(out)
            continue
        gdf = read_objects(src)
        gdf = gdf[gdf["task"].isin(options.tasks)].reset_index(drop=True)
        if gdf.empty:
            raise InputError(f"{src}: no objects of task(s) {', '.join(options.tasks)}")
        feats = slide_object_features(path, gdf, extractor, options, progress)
        table = pd.DataFrame({
            "slide": str(path), "uuid": gdf["uuid"].astype(str), "task": gdf["task"].astype(str),
            "class_id": gdf["class_id"].astype("int16"), "class_name": gdf["class_name"].astype(str),
            "x": gdf["centroid_x"].astype(float), "y": gdf["centroid_y"].astype(float),
            "label": gdf["class_name"].astype(str), "group": Path(path).stem,
        }, columns=COLUMNS)
        summary.written.append(write_features(out, table, feats, meta, options.overwrite))
        summary.rows += len(table)
    return summary
