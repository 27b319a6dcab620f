"""Write phantom tiles as the training datasets read them (docs/interfaces.md).

``nuclei/`` follows Lizard/CoNIC (``.mat`` with ``inst_map``, ``id``, ``class``),
``gland/`` and ``lumen/`` the GlaS/CRAG-style instance layout, ``tissue/`` the
Kather-100K class folders. One rendered tile serves the nuclei, gland and lumen
folders: the image PNG is written once and hard-linked into the other folders
(copied where the file system has no hard links).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import scipy.io

from cerberus_cli.errors import InputError
from cerberus_cli.model.config import KATHER_TO_TISSUE
from cerberus_cli.outputs.atomic import AtomicPath
from cerberus_cli.synthetic.noise import hash_u64
from cerberus_cli.synthetic.tiles import PhantomTile, render_tile

TASKS = ("nuclei", "gland", "lumen", "tissue")
TISSUE_PATCH = 224
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by cerberus-cli synthetic"


def tile_seed(seed: int, task: str, index: int) -> int:
    """The world seed of tile ``index`` of a dataset (distinct per task stream)."""
    stream = 0 if task in ("nuclei", "gland", "lumen") else 1
    return int(hash_u64(seed, 4000 + stream, index) >> np.uint64(33))


def _png(path: Path, arr: np.ndarray) -> None:
    img = arr[..., ::-1] if arr.ndim == 3 else arr
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{path}: could not write PNG")


def lizard_mat_bytes(tile: PhantomTile) -> bytes:
    """A Lizard-style label file (``inst_map``, ``id``, ``class``) as bytes.

    The header's creation date is replaced by a fixed text so equal tiles give
    byte-identical files.
    """
    ids, classes = tile.nucleus_ids_and_classes()
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"inst_map": tile.nuclei.astype(np.int32),
                           "id": ids.reshape(-1, 1).astype(np.int32),
                           "class": classes.reshape(-1, 1).astype(np.int32)},
                     do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_tile_dataset(out_dir: str | os.PathLike, count: int, size: int = 448, seed: int = 0,
                       tasks: Iterable[str] = TASKS, overwrite: bool = False,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Render ``count`` phantom tiles per task into a dataset folder.

    Returns the content of ``dataset.json``. The folder appears complete or not at
    all; an existing folder is refused unless ``overwrite``.
    """
    tasks = tuple(dict.fromkeys(tasks))
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task(s) {', '.join(bad) or '(none)'}; choose from {', '.join(TASKS)}")
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    if size < 64:
        raise InputError(f"--size must be at least 64 px, got {size}")
    target = AtomicPath(out_dir, overwrite=overwrite)
    root = target.tmp
    seg = [t for t in tasks if t != "tissue"]
    kather = sorted(KATHER_TO_TISSUE, key=KATHER_TO_TISSUE.get)
    total = count * (bool(seg) + ("tissue" in tasks))
    done = 0
    try:
        for t in seg:
            for sub in {"nuclei": ("images", "labels"), "gland": ("images", "instances", "classes"),
                        "lumen": ("images", "instances")}[t]:
                (root / t / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count if seg else 0):
            tile = render_tile(size, tile_seed(seed, "seg", i))
            name = f"phantom_{i:05d}"
            first: Path | None = None
            for t in seg:
                img = root / t / "images" / f"{name}.png"
                if first is None:
                    _png(img, tile.image)
                    first = img
                else:
                    _link_or_copy(first, img)
                if t == "nuclei":
                    (root / t / "labels" / f"{name}.mat").write_bytes(lizard_mat_bytes(tile))
                elif t == "gland":
                    _png(root / t / "instances" / f"{name}.png", tile.glands.astype(np.uint16))
                    _png(root / t / "classes" / f"{name}.png", tile.gland_class)
                else:
                    _png(root / t / "instances" / f"{name}.png", tile.lumina.astype(np.uint16))
            done += 1
            if progress:
                progress(done, total)
        if "tissue" in tasks:
            for folder in kather:
                (root / "tissue" / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                folder = kather[i % len(kather)]
                tile = render_tile(TISSUE_PATCH, tile_seed(seed, "tissue", i),
                                   tissue_class=KATHER_TO_TISSUE[folder])
                _png(root / "tissue" / folder / f"phantom_{i:05d}.png", tile.image)
                done += 1
                if progress:
                    progress(done, total)
        meta = {
            "generator": "cerberus-cli synthetic phantom",
            "seed": int(seed), "count": int(count), "size": int(size), "mpp": 0.5,
            "tasks": list(tasks), "tissue_patch": TISSUE_PATCH,
            "images": "one image per tile, hard-linked (or copied) into each task's images/",
            "nuclei_labels": "Lizard .mat: inst_map int32, id (N,1), class (N,1) 1..6",
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        target.commit()
    except BaseException:
        target.abort()
        raise
    return meta
