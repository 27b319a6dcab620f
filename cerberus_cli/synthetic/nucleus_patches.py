"""Nucleus-type phantom patches: patches centred on nuclei, labelled with the nucleus type.

Phantom tiles (:func:`~cerberus_cli.synthetic.tiles.render_tile`, 0.5 um/px) are
rendered one after the other; every typed nucleus whose centred patch fits inside its
tile gives one patch (at most ``per_tile`` per tile, drawn at random), labelled with its
type (``epithelial``, ``lymphocyte``, ...). Patches of one tile form one group (one
stain, like one slide) and whole groups go to one split (:func:`group_splits`); rows of
``val``/``test`` whose type never occurs in ``train`` are left out, so every label set
is one a classifier trained on ``train`` can predict. The table (``nuclei.csv``: path,
label, group, split) sits beside ``images/``. The same seed always gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.optionspec import check_positive, check_range, opt
from cerberus_cli.core.vocabulary import NUCLEUS_TYPES
from cerberus_cli.synthetic.signet import group_splits, write_table
from cerberus_cli.synthetic.tiles import render_tile

TABLE_NAME = "nuclei.csv"
#: Side of the rendered tiles the patches are cut from (px at 0.5 um/px).
TILE_PX = 256

#: ``progress(done, total)``: after every patch; the library never prints.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthNucleiOptions:
    """A nucleus-type patch task: how many patches, their size and seed."""

    count: int = opt(400, "Patches (one per nucleus, centred on it).")
    size: int = opt(32, "Patch side in px (0.5 um/px).")
    per_tile: int = opt(16, "At most this many nuclei per rendered tile (one group).")
    seed: int = opt(0, "Random seed (same seed, same bytes).")
    overwrite: bool = opt(False, "Replace an existing dataset folder.")

    def __post_init__(self) -> None:
        check_positive("count", self.count)
        check_range("size", self.size, 16, TILE_PX // 2)
        check_positive("per_tile", self.per_tile)


def nucleus_patches(seed: int, tile_index: int, size: int, per_tile: int
                    ) -> list[tuple[np.ndarray, str]]:
    """(patch, type name) for up to ``per_tile`` typed nuclei of one phantom tile."""
    tile = render_tile(TILE_PX, seed=int(np.random.default_rng([seed, tile_index, 3]).integers(2**31)))
    ids, classes = tile.nucleus_ids_and_classes()
    half = size // 2
    found = []
    for nid, cls in zip(ids, classes):
        if cls == 0:
            continue
        ys, xs = np.nonzero(tile.nuclei == nid)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        y0, x0 = cy - half, cx - half
        if y0 < 0 or x0 < 0 or y0 + size > TILE_PX or x0 + size > TILE_PX:
            continue
        found.append((tile.image[y0:y0 + size, x0:x0 + size], NUCLEUS_TYPES[int(cls)].name))
    rng = np.random.default_rng([seed, tile_index, 5])
    keep = sorted(rng.permutation(len(found))[:per_tile].tolist())
    return [found[i] for i in keep]


def write_nucleus_dataset(out_dir: str | os.PathLike, count: int, seed: int = 0, size: int = 32,
                          per_tile: int = 16, overwrite: bool = False,
                          progress: Progress | None = None) -> Path:
    """Write about ``count`` nucleus-type patches and their table; return the table's path.

    Exactly ``count`` patches are rendered; val/test rows of a type absent from train
    are dropped from the table (and their images not written). The folder appears
    complete or not at all.
    """
    out = Path(out_dir)
    target = AtomicPath(out, overwrite=overwrite)
    try:
        (target.tmp / "images").mkdir(parents=True)
        samples: list[tuple[int, np.ndarray, str]] = []
        tile = 0
        while len(samples) < count:
            for image, label in nucleus_patches(seed, tile, size, per_tile)[:count - len(samples)]:
                samples.append((tile, image, label))
            tile += 1
            if tile > 20 * count:  # pragma: no cover - every tile holds typed nuclei
                raise RuntimeError("phantom tiles hold no typed nuclei")
        splits = group_splits(tile, seed)
        train_labels = {label for g, _, label in samples if splits[g] == "train"}
        rows = []
        for i, (g, image, label) in enumerate(samples):
            if splits[g] == "train" or label in train_labels:
                name = f"images/t{g:04d}_{i:06d}.png"
                if not cv2.imwrite(str(target.tmp / name), image[..., ::-1]):
                    raise OSError(f"{out / name}: cannot be written")
                rows.append({"path": name, "label": label, "group": f"t{g:04d}", "split": splits[g]})
            if progress is not None:
                progress(i + 1, count)
        write_table(target.tmp / TABLE_NAME, rows, ["path", "label", "group", "split"])
        target.commit()
    except BaseException:
        target.abort()
        raise
    return out / TABLE_NAME
