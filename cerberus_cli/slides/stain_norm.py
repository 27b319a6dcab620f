"""Stain normalisation of H&E tiles to a reference (Macenko; Reinhard).

A slide's stain is fitted once, on tissue pixels of a few of its own tiles, and every
tile is then mapped with that one transform, so neighbouring tiles stay consistent.

- **Macenko** (Macenko et al., ISBI 2009): optical density ``OD = -log((I + 1) / 256)``;
  pixels with every channel's OD above ``beta`` are tissue; the haematoxylin and eosin
  vectors are the robust extreme angles (``alpha`` and ``100 - alpha`` percentiles) in
  the plane of the two main OD directions; concentrations by least squares, scaled so
  their 99th percentiles match the reference's; the image is rebuilt with the
  reference's stain vectors.
- **Reinhard** (Reinhard et al., 2001): per-channel mean and standard deviation in
  CIELAB matched to the reference's (statistics from tissue pixels only).

:data:`PHANTOM_REFERENCE` is the stain of the phantom tiles the bundled model learnt
from, fitted with :func:`fit_reference` (``tests/test_stain_norm.py`` fits it again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

METHODS = ("none", "macenko", "reinhard")
BETA = 0.15    # OD threshold of tissue pixels
ALPHA = 1.0    # percentile of the robust extreme angles
MAX_PIXELS = 200_000


@dataclass(frozen=True)
class StainReference:
    """What a tile is normalised to: H and E optical-density unit vectors (columns of
    ``stains``, 3x2, RGB order), the 99th percentiles of their concentrations, and the
    CIELAB mean and standard deviation of tissue pixels (float ``cv2`` LAB)."""

    stains: tuple[tuple[float, float], ...]
    max_conc: tuple[float, float]
    lab_mean: tuple[float, float, float]
    lab_std: tuple[float, float, float]


#: The phantom training tiles' stain (27 tiles of ``cerberus synth tiles --seed 20261123``).
PHANTOM_REFERENCE = StainReference(
    stains=((0.5665, 0.1972), (0.7267, 0.7948), (0.3885, 0.5739)),
    max_conc=(2.758, 1.3665),
    lab_mean=(56.09, 27.3, -9.73),
    lab_std=(13.97, 6.77, 6.83),
)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of uint8 RGB pixels (..., 3) as float32."""
    return -np.log((rgb.astype(np.float32) + 1.0) / 256.0)


def _tissue_od(rgb: np.ndarray) -> np.ndarray:
    """OD of tissue pixels (N, 3), subsampled evenly to at most ``MAX_PIXELS``."""
    od = optical_density(rgb.reshape(-1, 3))
    od = od[(od > BETA).all(axis=1)]
    if len(od) > MAX_PIXELS:
        od = od[:: -(-len(od) // MAX_PIXELS)]
    return od


def macenko_stains(od: np.ndarray) -> np.ndarray:
    """H and E unit vectors (3x2) of tissue OD pixels (N, 3); H first."""
    if len(od) < 100:
        raise ValueError(f"too few stained pixels to fit stain vectors ({len(od)})")
    _, vecs = np.linalg.eigh(np.cov(od.T))
    plane = vecs[:, [1, 2]]                 # the two largest eigenvalues
    plane *= np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)  # point into positive OD
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [ALPHA, 100 - ALPHA])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Haematoxylin absorbs red more than eosin does.
    h, e = (v1, v2) if v1[0] > v2[0] else (v2, v1)
    stains = np.column_stack([h, e])
    return stains / np.linalg.norm(stains, axis=0, keepdims=True)


def concentrations(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """Least-squares H and E concentrations (N, 2) of OD pixels (N, 3)."""
    return np.linalg.lstsq(stains, od.T, rcond=None)[0].T


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def fit_reference(images: Iterable[np.ndarray]) -> StainReference:
    """The stain of uint8 RGB images (pooled tissue pixels)."""
    imgs = [np.asarray(i, np.uint8) for i in images]
    od = np.concatenate([_tissue_od(i) for i in imgs])
    stains = macenko_stains(od)
    mx = np.percentile(concentrations(od, stains), 99, axis=0)
    lab = np.concatenate([_lab(i).reshape(-1, 3)[(optical_density(i.reshape(-1, 3)) > BETA).all(1)]
                          for i in imgs])
    def r(a: np.ndarray, digits: int) -> list:
        return np.round(np.asarray(a, np.float64), digits).tolist()

    return StainReference(tuple(tuple(row) for row in r(stains, 4)), tuple(r(mx, 4)),
                          tuple(r(lab.mean(0), 2)), tuple(r(lab.std(0), 2)))


class StainNormaliser:
    """Maps tiles from a source stain (fitted with :meth:`fit`) to ``reference``."""

    def __init__(self, method: str, reference: StainReference = PHANTOM_REFERENCE) -> None:
        if method not in METHODS:
            raise ValueError(f"stain normalisation must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.reference = reference
        self.source: StainReference | None = None

    def fit(self, images: Iterable[np.ndarray]) -> StainNormaliser:
        """Fit the source stain on uint8 RGB images of one slide (tissue pixels pooled)."""
        if self.method != "none":
            self.source = fit_reference(images)
        return self

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Normalise one uint8 RGB image (H, W, 3)."""
        if self.method == "none":
            return rgb
        if self.source is None:
            raise RuntimeError("StainNormaliser.fit must run before normalising")
        if self.method == "macenko":
            return self._macenko(rgb)
        return self._reinhard(rgb)

    def _macenko(self, rgb: np.ndarray) -> np.ndarray:
        src, ref = self.source, self.reference
        assert src is not None
        od = optical_density(rgb.reshape(-1, 3))
        conc = concentrations(od, np.asarray(src.stains))
        conc *= np.asarray(ref.max_conc) / np.maximum(np.asarray(src.max_conc), 1e-6)
        out = 256.0 * np.exp(-(conc @ np.asarray(ref.stains).T)) - 1.0
        return np.clip(out, 0, 255).round().astype(np.uint8).reshape(rgb.shape)

    def _reinhard(self, rgb: np.ndarray) -> np.ndarray:
        src, ref = self.source, self.reference
        assert src is not None
        lab = _lab(rgb)
        lab = (lab - np.asarray(src.lab_mean, np.float32)) / np.maximum(
            np.asarray(src.lab_std, np.float32), 1e-3)
        lab = lab * np.asarray(ref.lab_std, np.float32) + np.asarray(ref.lab_mean, np.float32)
        lab[..., 0] = np.clip(lab[..., 0], 0, 100)
        out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
        return np.clip(out * 255.0, 0, 255).round().astype(np.uint8)
