"""Object features: one row per segmented nucleus, gland or lumen, pooled under the
object's own mask on the chosen encoder and decoder maps; one forward pass per tile, not
per object.

Each object belongs to the tile holding its centroid; the tile is read with a margin so
that objects crossing its edge are still seen whole (up to the margin). The mask is the
set of tile pixels whose centres lie inside the object's polygon; on a map of stride
``st`` each cell weighs by the fraction of its ``st x st`` pixels in the mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import torch

from cerberus_cli.core.errors import InputError
from cerberus_cli.outputs.object_formats import FORMATS
from cerberus_cli.outputs.read import read_objects
from cerberus_cli.slides.scale import read_scaled
from cerberus_cli.slides.slide import open_slide
from cerberus_cli.transfer.decoder_levels import level_stride
from cerberus_cli.transfer.extractor import (
    Extractor,
    FeaturesSummary,
    make_extractor,
    should_skip,
    slide_output,
)
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.forward import Progress
from cerberus_cli.transfer.options import FeaturesOptions
from cerberus_cli.transfer.pooling import cell_weights, masked_pool

COLUMNS = ["slide", "uuid", "task", "class_id", "class_name", "x", "y", "label", "group"]


def objects_file(spec: str, slide: str | os.PathLike, n_slides: int) -> Path:
    """The object file of ``slide``: ``spec`` itself, or for a folder (e.g. ``cerberus
    segment``'s output) ``spec/<stem>`` with a suffix of the object format table, the
    table's first format where a slide has several (``S.parquet`` before ``S.geojson``)."""
    p = Path(spec)
    stem = Path(slide).stem
    if p.is_dir():
        found = [p / f"{stem}{s}" for f in FORMATS for s in f.suffixes]
        chosen = next((f for f in found if f.is_file()), None)
        if chosen is None:
            raise InputError(f"{p}: no object file for slide {slide} "
                             f"({' or '.join(f.name for f in found)})")
        return chosen
    if not p.is_file():
        raise InputError(f"{p}: no such object file")
    if n_slides > 1:
        raise InputError(f"{p}: one object file for {n_slides} slides; give a folder of "
                         f"SLIDE{FORMATS[0].suffixes[0]} (or another object format) files")
    return p


def object_mask(geom, origin: tuple[int, int], s: float, block: int) -> tuple[np.ndarray, int, int]:
    """The pixels of a tile whose centres lie inside ``geom``, on a window around it.

    ``geom`` is in level-0 px (pixel ``i`` covers ``[i, i+1)``, as ``segment`` writes
    polygons); tile pixel ``(r, c)`` covers level-0 ``[(origin + (c, r)) * s, + s)`` and is
    inside when its centre is. Returns ``(mask, top, left)``: the bool window and its
    tile-px corner, both multiples of ``block`` (so every level's cells tile it whole).
    """
    x0, y0 = origin
    bx0, by0, bx1, by1 = geom.bounds
    left = int(math.floor((bx0 / s - x0) / block)) * block
    top = int(math.floor((by0 / s - y0) / block)) * block
    right = max(left + block, int(math.ceil((bx1 / s - x0) / block)) * block)
    bottom = max(top + block, int(math.ceil((by1 / s - y0) / block)) * block)
    cx = (np.arange(left, right) + x0 + 0.5) * s
    cy = (np.arange(top, bottom) + y0 + 0.5) * s
    shapely.prepare(geom)
    mask = shapely.contains_xy(geom, cx[None, :], cy[:, None])
    return mask, top, left


def pool_object(maps: list[torch.Tensor], strides: list[int], mask: np.ndarray, top: int,
                left: int, centre: tuple[float, float], pooling: str) -> torch.Tensor:
    """One object's pooled features: each map (C, h, w) pooled under the object's mask.

    Cells are weighted by the fraction of their pixels inside the object; an object that
    covers no pixel centre (or lies beyond a map) takes the cell of its ``centre``
    (tile px).
    """
    parts = []
    for fmap, st in zip(maps, strides):
        h, w = fmap.shape[-2:]
        i0, j0 = top // st, left // st
        cells = cell_weights(mask, st, (mask.shape[0] // st, mask.shape[1] // st))
        a0, b0 = max(0, -i0), max(0, -j0)
        a1, b1 = min(cells.shape[0], h - i0), min(cells.shape[1], w - j0)
        if a1 > a0 and b1 > b0 and cells[a0:a1, b0:b1].sum() > 0:
            weights = cells[a0:a1, b0:b1]
            window = fmap[:, i0 + a0:i0 + a1, j0 + b0:j0 + b1]
        else:
            weights = np.ones((1, 1), np.float32)
            i = min(h - 1, max(0, int(centre[1] // st)))
            j = min(w - 1, max(0, int(centre[0] // st)))
            window = fmap[:, i:i + 1, j:j + 1]
        wts = torch.from_numpy(np.ascontiguousarray(weights))[None].to(fmap.device)
        parts.append(masked_pool(window.float(), wts, pooling)[0])
    return torch.cat(parts)


def slide_object_features(path: str, objects: pd.DataFrame, extractor: Extractor,
                          options: FeaturesOptions, progress: Progress | None) -> np.ndarray:
    """(N, D) features of ``objects`` (level-0 geometry) of one slide."""
    enc, fwd, layers = extractor.encoder, extractor.forward, extractor.layers
    mpp, tile, margin = enc.mpp, options.tile_px, options.margin
    strides = [level_stride(enc, name) for name in layers]
    block = max(strides)
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
            out = fwd.maps([img])
            maps = [out[name][0] for name in layers]
            for k in idx:
                mask, top, left = object_mask(objects.geometry.iloc[k], (x0, y0), s, block)
                centre = (objects["centroid_x"].iloc[k] / s - x0, objects["centroid_y"].iloc[k] / s - y0)
                feats[k] = pool_object(maps, strides, mask, top, left, centre,
                                       options.pooling).cpu().numpy()
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
                             "margin_px": options.margin, "pooling": "masked " + options.pooling,
                             "mask": "pixel centres inside the polygon"})
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
