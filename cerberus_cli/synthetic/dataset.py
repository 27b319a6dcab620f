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
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import KATHER_TO_TISSUE, TASKS
from cerberus_cli.synthetic.noise import hash_u64
from cerberus_cli.synthetic.params import SCENES, tile_scene
from cerberus_cli.synthetic.tiles import PhantomTile, render_tile

TISSUE_PATCH = 224
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by cerberus-cli synthetic"


def tile_seed(seed: int, task: str, index: int) -> int:
    """The world seed of tile ``index`` of a dataset (distinct per task stream)."""
    stream = 0 if task in ("nuclei", "gland", "lumen") else 1
    return int(hash_u64(seed, 4000 + stream, index) >> np.uint64(33))


def _png_bytes(arr: np.ndarray) -> bytes:
    img = arr[..., ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


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


def _render_job(job: tuple[str, int, int, int, tuple[str, ...], str]) -> list[tuple[str, bytes | None]]:
    """Render one dataset item; return (relative path, file bytes or None = link image)."""
    kind, index, seed, size, seg, scene = job
    name = f"phantom_{index:05d}"
    if kind == "tissue":
        kather = sorted(KATHER_TO_TISSUE, key=KATHER_TO_TISSUE.__getitem__)
        folder = kather[index % len(kather)]
        tile = render_tile(TISSUE_PATCH, tile_seed(seed, "tissue", index),
                           tissue_class=KATHER_TO_TISSUE[folder])
        return [(f"tissue/{folder}/{name}.png", _png_bytes(tile.image))]
    world = tile_seed(seed, "seg", index)
    tile = render_tile(size, world, tile_scene(scene, world))
    files: list[tuple[str, bytes | None]] = []
    for t in seg:
        files.append((f"{t}/images/{name}.png", None if files else _png_bytes(tile.image)))
        if t == "nuclei":
            files.append((f"nuclei/labels/{name}.mat", lizard_mat_bytes(tile)))
        elif t == "gland":
            files.append((f"gland/instances/{name}.png", _png_bytes(tile.glands.astype(np.uint16))))
            files.append((f"gland/classes/{name}.png", _png_bytes(tile.gland_class)))
        else:
            files.append((f"lumen/instances/{name}.png", _png_bytes(tile.lumina.astype(np.uint16))))
    return files


def write_tile_dataset(out_dir: str | os.PathLike, count: int, size: int = 448, seed: int = 0,
                       tasks: Iterable[str] = TASKS, overwrite: bool = False, workers: int = 1,
                       progress: Callable[[int, int], None] | None = None, scene: str = "colon") -> dict:
    """Render ``count`` phantom tiles per task into a dataset folder.

    Returns the content of ``dataset.json``. The folder appears complete or not at
    all; an existing folder is refused unless ``overwrite``. ``workers`` > 1
    renders in that many processes; the files are identical either way. ``scene``
    ``colon`` renders the colon phantom the bundled model was first trained on;
    ``varied`` draws per segmentation tile a stroma-rich scene with real-sized,
    textured nuclei, purple fibres and stronger stain variation
    (:func:`~cerberus_cli.synthetic.params.varied_scene`); ``slide`` the scene of
    ``cerberus synth slide`` (its pale tissue, fewer and rounder glands), so tiles and
    slides of one scene can be compared; tissue patches stay colon.
    """
    tasks = tuple(dict.fromkeys(tasks))
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task(s) {', '.join(bad) or '(none)'}; choose from {', '.join(TASKS)}")
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    if size < 64:
        raise InputError(f"--size must be at least 64 px, got {size}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if scene not in SCENES:
        raise InputError(f"unknown scene {scene!r}; choose from {', '.join(SCENES)}")
    target = AtomicPath(out_dir, overwrite=overwrite)
    root = target.tmp
    seg = tuple(t for t in tasks if t != "tissue")
    jobs = [("seg", i, seed, size, seg, scene) for i in range(count if seg else 0)]
    jobs += [("tissue", i, seed, size, seg, scene) for i in range(count if "tissue" in tasks else 0)]
    pool = None
    try:
        for t in seg:
            for sub in {"nuclei": ("images", "labels"), "gland": ("images", "instances", "classes"),
                        "lumen": ("images", "instances")}[t]:
                (root / t / sub).mkdir(parents=True, exist_ok=True)
        if "tissue" in tasks:
            for folder in KATHER_TO_TISSUE:
                (root / "tissue" / folder).mkdir(parents=True, exist_ok=True)
        if workers > 1:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_render_job, jobs, chunksize=1)
        else:
            results = map(_render_job, jobs)
        for done, files in enumerate(results, start=1):
            image = root / files[0][0]
            for rel, data in files:
                if data is None:
                    _link_or_copy(image, root / rel)
                else:
                    (root / rel).write_bytes(data)
            if progress:
                progress(done, len(jobs))
        meta = {
            "generator": "cerberus-cli synthetic phantom",
            "seed": int(seed), "count": int(count), "size": int(size), "mpp": 0.5, "scene": scene,
            "tasks": list(tasks), "tissue_patch": TISSUE_PATCH,
            "images": "one image per tile, hard-linked (or copied) into each task's images/",
            "nuclei_labels": "Lizard .mat: inst_map int32, id (N,1), class (N,1) 1..6",
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        target.commit()
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        target.abort()
        raise
    if pool is not None:
        pool.shutdown()
    return meta
