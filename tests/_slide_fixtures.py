"""Small synthetic slides for the slide-reading tests, written with tifffile."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import tifffile

from cerberus_cli.slides.writer import write_slide

GLASS = (244, 244, 246)

#: A real scanner-written slide (Aperio, CC0; see tests/data/cmu_small_region.LICENSE.md).
REAL_SLIDE = Path(__file__).parent / "data" / "cmu_small_region.svs"


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (compresses like tissue, every pixel distinct enough)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return img


def he_tissue(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like image on glass and its true tissue mask.

    Tissue: three filled ellipses, pink stroma texture with purple nuclei. The
    image also carries distractors that are *not* tissue: blue, green and black
    pen strokes and dark grey dust specks.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GLASS
    img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((height, width), np.uint8)
    for cx, cy, ax, ay, ang in ((0.28, 0.35, 0.18, 0.22, 20), (0.68, 0.60, 0.20, 0.15, -30),
                                (0.30, 0.80, 0.08, 0.07, 0)):
        cv2.ellipse(truth, (int(cx * width), int(cy * height)), (int(ax * width), int(ay * height)),
                    ang, 0, 360, 1, -1)
    stroma = np.array([228, 150, 190], np.int16) + rng.integers(-18, 18, (height, width, 3))
    tissue_rgb = np.clip(stroma, 0, 255).astype(np.uint8)
    nuclei = (rng.random((height, width)) < 0.01).astype(np.uint8)
    nuclei = cv2.dilate(nuclei, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))).astype(bool)
    tissue_rgb[nuclei] = (95, 60, 150)
    img[truth.astype(bool)] = tissue_rgb[truth.astype(bool)]
    # Distractors on the glass.
    cv2.line(img, (int(0.05 * width), int(0.95 * height)), (int(0.95 * width), int(0.93 * height)),
             (35, 70, 175), max(3, width // 100))
    cv2.line(img, (int(0.92 * width), int(0.05 * height)), (int(0.93 * width), int(0.40 * height)),
             (40, 150, 80), max(3, width // 100))
    cv2.line(img, (int(0.05 * width), int(0.04 * height)), (int(0.45 * width), int(0.05 * height)),
             (25, 25, 30), max(3, width // 100))  # black marker
    for k in range(12):
        x, y = int(rng.uniform(0.55, 0.9) * width), int(rng.uniform(0.05, 0.3) * height)
        cv2.circle(img, (x, y), max(2, width // 150), (45, 45, 48), -1)
    return img, truth.astype(bool)


def write_variant(path: Path, image: np.ndarray, *, layout: str = "svs", compression: str = "jpeg",
                  mpp: float | None = 0.25, objective_power: float | None = 40.0,
                  downsamples=(1, 4, 16), tile: int = 256) -> Path:
    """Write ``image`` as one of the test slide layouts."""
    associated = None
    if layout == "svs":
        associated = {"label": np.full((60, 50, 3), 200, np.uint8),
                      "macro": smooth_image(80, 200, seed=3)}
    return write_slide(path, image, mpp, layout=layout, compression=compression,
                       objective_power=objective_power if layout == "svs" else None,
                       associated=associated, downsamples=downsamples, tile=tile, quality=95)


def corrupt_tile(path: Path, page: int = 0, tile: int = 0) -> None:
    """Overwrite the compressed bytes of one tile with garbage, in place."""
    with tifffile.TiffFile(str(path)) as tf:
        p = tf.pages[page]
        offset, count = int(p.dataoffsets[tile]), int(p.databytecounts[tile])
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(np.random.default_rng(1).integers(0, 256, count, dtype=np.uint8)))


def write_png_with_mpp(path: Path, image: np.ndarray, mpp: float) -> Path:
    """A PNG carrying its pixel size in a pHYs chunk (pixels per metre)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    data = buf.tobytes()
    ppm = int(round(1e6 / mpp))
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])
    return path
