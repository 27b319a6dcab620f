"""Tiny generated datasets in the real layouts of each training format.

Images are simple but learnable: dark blobs on pink stroma whose colour encodes
the class, so a few dozen training steps visibly reduce every loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from cerberus_cli.core.vocabulary import KATHER_TO_TISSUE

NUCLEUS_COLOURS = {1: (60, 20, 120), 2: (90, 40, 140), 3: (30, 10, 80), 4: (110, 30, 90),
                   5: (150, 40, 110), 6: (70, 60, 150)}
TISSUE_COLOURS = {"ADI": (250, 250, 245), "BACK": (235, 235, 235), "DEB": (200, 120, 160),
                  "LYM": (80, 50, 140), "MUC": (200, 190, 230), "MUS": (220, 90, 130),
                  "NORM": (170, 100, 170), "STR": (240, 170, 200), "TUM": (130, 60, 150)}


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[...] = (235, 180, 210)
    img += rng.normal(0, 6, img.shape)
    return img


def nuclei_tile(size: int, rng: np.random.Generator,
                n: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(RGB image, int32 instance map, id -> class 1..6) with non-overlapping round nuclei."""
    img = _background(size, rng)
    inst = np.zeros((size, size), np.int32)
    classes: dict[int, int] = {}
    n = n if n is not None else max(3, size * size // 600)
    nid = 0
    for _ in range(n * 3):
        if nid >= n:
            break
        r = int(rng.integers(3, 6))
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        disk = np.zeros_like(inst, np.uint8)
        cv2.circle(disk, (cx, cy), r, 1, -1)
        grown = cv2.dilate(disk, np.ones((3, 3), np.uint8))
        if (inst[grown > 0] > 0).any():
            continue
        nid += 1
        cls = int(rng.integers(1, 7))
        inst[disk > 0] = nid
        classes[nid] = cls
        img[disk > 0] = NUCLEUS_COLOURS[cls]
    return np.clip(img, 0, 255).astype(np.uint8), inst, classes


def gland_tile(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, gland instances, gland classes 1|2, lumen instances)."""
    img = _background(size, rng)
    glands = np.zeros((size, size), np.int32)
    classes = np.zeros((size, size), np.uint8)
    lumen = np.zeros((size, size), np.int32)
    centres = [(size // 4, size // 4), (3 * size // 4, 3 * size // 4), (size // 4, 3 * size // 4)]
    for gid, (cy, cx) in enumerate(centres[: int(rng.integers(1, 4))], start=1):
        r = size // 6 + int(rng.integers(-2, 3))
        m = np.zeros_like(glands, np.uint8)
        cv2.circle(m, (cx, cy), r, 1, -1)
        glands[m > 0] = gid
        cls = int(rng.integers(1, 3))
        classes[m > 0] = cls
        img[m > 0] = (150, 70, 160) if cls == 1 else (190, 110, 60)
        lm = np.zeros_like(m)
        cv2.circle(lm, (cx, cy), max(2, r // 3), 1, -1)
        lumen[lm > 0] = gid
        img[lm > 0] = (250, 245, 250)
    return np.clip(img, 0, 255).astype(np.uint8), glands, classes, lumen


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), arr), path


def _mat(path: Path, inst: np.ndarray, classes: dict[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.array(sorted(classes), np.int32).reshape(-1, 1)
    cls = np.array([classes[i] for i in sorted(classes)], np.int32).reshape(-1, 1)
    scipy.io.savemat(str(path), {"inst_map": inst, "id": ids, "class": cls})


def tissue_patch(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[...] = TISSUE_COLOURS[name]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_phantom(root: Path, count: int = 4, size: int = 96, tissue_size: int = 96, seed: int = 0) -> Path:
    """A folder in the ``cerberus synth tiles`` layout (docs/interfaces.md)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(
        {"generator": "test-fixture", "seed": seed, "count": count, "size": size, "mpp": 0.5,
         "tasks": ["nuclei", "gland", "lumen", "tissue"]}))
    for i in range(count):
        name = f"tile_{i:03d}"
        img, inst, classes = nuclei_tile(size, rng)
        _png(root / "nuclei/images" / f"{name}.png", img)
        _mat(root / "nuclei/labels" / f"{name}.mat", inst, classes)
        img, glands, gcls, lumen = gland_tile(size, rng)
        _png(root / "gland/images" / f"{name}.png", img)
        _png(root / "gland/instances" / f"{name}.png", glands.astype(np.uint16))
        _png(root / "gland/classes" / f"{name}.png", gcls)
        _png(root / "lumen/images" / f"{name}.png", img)
        _png(root / "lumen/instances" / f"{name}.png", lumen.astype(np.uint16))
        for kather in KATHER_TO_TISSUE:
            _png(root / "tissue" / kather / f"{name}.png", tissue_patch(kather, tissue_size, rng))
    return root


# --- the real layouts of the public datasets ------------------------------------------

def write_lizard(root: Path, count: int = 3, size: int = 64, seed: int = 1) -> Path:
    """Lizard release layout: images in lizard_images1/Lizard_Images1, labels in
    lizard_labels/Lizard_Labels/Labels."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        name = f"consep_{i + 1}"
        img, inst, classes = nuclei_tile(size, rng)
        _png(root / "lizard_images1/Lizard_Images1" / f"{name}.png", img)
        _mat(root / "lizard_labels/Lizard_Labels/Labels" / f"{name}.mat", inst, classes)
    return root


def write_conic(root: Path, count: int = 3, size: int = 64, seed: int = 2) -> Path:
    """CoNIC layout: images.npy (N,H,W,3) uint8, labels.npy (N,H,W,2), patch_info.csv."""
    rng = np.random.default_rng(seed)
    images, labels, names = [], [], []
    for i in range(count):
        img, inst, classes = nuclei_tile(size, rng)
        lut = np.zeros(inst.max() + 1, np.int32)
        for k, v in classes.items():
            lut[k] = v
        images.append(img)
        labels.append(np.stack([inst, lut[inst]], -1))
        names.append(f"crag_{i // 2 + 1}-{i:04d}")
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", np.stack(images))
    np.save(root / "labels.npy", np.stack(labels).astype(np.int32))
    (root / "patch_info.csv").write_text("patch_info\n" + "\n".join(names) + "\n")
    return root


def write_pannuke(root: Path, count: int = 2, size: int = 128, seed: int = 3) -> Path:
    """PanNuke layout: Fold 1/images/fold1/images.npy (float64) and
    Fold 1/masks/fold1/masks.npy (N,H,W,6), at 0.25 um/px."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        img, inst, classes = nuclei_tile(size, rng)
        m = np.zeros((size, size, 6), np.float64)
        for k, v in classes.items():
            channel = {1: 1, 2: 0, 3: 1, 4: 1, 5: 3, 6: 2}[v]
            m[..., channel][inst == k] = k
        m[..., 5] = (inst == 0)
        images.append(img.astype(np.float64))
        masks.append(m)
    (root / "Fold 1/images/fold1").mkdir(parents=True, exist_ok=True)
    (root / "Fold 1/masks/fold1").mkdir(parents=True, exist_ok=True)
    np.save(root / "Fold 1/images/fold1/images.npy", np.stack(images))
    np.save(root / "Fold 1/images/fold1/types.npy", np.array(["Colon"] * count))
    np.save(root / "Fold 1/masks/fold1/masks.npy", np.stack(masks))
    return root


def write_glas(root: Path, count: int = 3, size: int = 124, seed: int = 4) -> Path:
    """GlaS layout: Warwick QU Dataset folder with NAME.bmp, NAME_anno.bmp, Grade.csv."""
    rng = np.random.default_rng(seed)
    folder = root / "Warwick QU Dataset (Released 2016_07_08)"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)"]
    for i in range(count):
        img, glands, _, _ = gland_tile(size, rng)
        name = f"train_{i + 1}"
        cv2.imwrite(str(folder / f"{name}.bmp"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"{name}_anno.bmp"), glands.astype(np.uint8))
        rows.append(f"{name},{i // 2 + 1},benign,adenomatous")
    (folder / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root


def write_crag(root: Path, count: int = 2, size: int = 110, seed: int = 5) -> Path:
    """CRAG layout: CRAG/train/Images/*.png and CRAG/train/Annotation/*.png."""
    rng = np.random.default_rng(seed)
    for split in ("train", "valid"):
        for i in range(count):
            img, glands, _, _ = gland_tile(size, rng)
            _png(root / "CRAG" / split / "Images" / f"{split}_{i + 1}.png", img)
            _png(root / "CRAG" / split / "Annotation" / f"{split}_{i + 1}.png", glands.astype(np.uint16))
    return root


def write_kather(root: Path, per_class: int = 2, size: int = 224, seed: int = 6, ext: str = ".tif") -> Path:
    """NCT-CRC-HE-100K layout: one folder per Kather class of 224 px TIFF patches."""
    rng = np.random.default_rng(seed)
    for name in KATHER_TO_TISSUE:
        for i in range(per_class):
            _png(root / name / f"{name}-{i:04d}{ext}", tissue_patch(name, size, rng))
    return root
