"""One phantom tile with every label: the unit the datasets and tests use."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cerberus_cli.synthetic.noise import white_noise
from cerberus_cli.synthetic.paint import PAINT_MARGIN, paint
from cerberus_cli.synthetic.params import (
    GLAND,
    KIND_SURFACE,
    SURFACE,
    TILE_SCENE,
    SceneParams,
)
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.stain import Stain, finish, jpeg_roundtrip


@dataclass
class PhantomTile:
    """A rendered tile at 0.5 um/px and its exact labels (all HxW).

    Instance ids are contiguous from 1 in every map. ``lumen_parent[i - 1]`` is the
    gland id that encloses lumen ``i``.
    """

    image: np.ndarray          # uint8 HxWx3 RGB
    nuclei: np.ndarray         # int32 instances
    nucleus_class: np.ndarray  # uint8 0..6 (NUCLEUS_TYPES)
    glands: np.ndarray         # int32 instances (glands and surface epithelium)
    gland_class: np.ndarray    # uint8 0..2 (GLAND_TYPES)
    lumina: np.ndarray         # int32 instances
    lumen_parent: np.ndarray   # int32 per lumen: its gland id
    tissue: np.ndarray         # uint8 0..8 (TISSUE_TYPES)
    seed: int

    def nucleus_ids_and_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """Instance ids 1..N and the class of each (Lizard's ``id`` and ``class``)."""
        n = int(self.nuclei.max())
        cls = np.zeros(n + 1, np.int64)
        cls[self.nuclei.ravel()] = self.nucleus_class.ravel()
        return np.arange(1, n + 1), cls[1:]


def _relabel(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous ids 1..N in order of first appearance value; returns (map, old ids)."""
    old = np.unique(inst)
    old = old[old > 0]
    lut = np.zeros(int(inst.max()) + 1 if inst.size else 1, np.int32)
    lut[old] = np.arange(1, len(old) + 1, dtype=np.int32)
    return lut[inst], old


def render_tile(size: int | tuple[int, int] = 448, seed: int = 0,
                params: SceneParams = TILE_SCENE, tissue_class: int | None = None,
                jpeg: bool = True) -> PhantomTile:
    """Render one phantom H&E tile with all its labels.

    ``size`` is the side (or ``(height, width)``) in pixels at 0.5 um/px. The same
    ``seed`` and options always give identical arrays. ``tissue_class`` (0..8) makes
    that tissue class fill the tile (0 = glass), as for tissue-type patches.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h < 16 or w < 16:
        raise ValueError(f"tile size must be at least 16 px, got {h}x{w}")
    if tissue_class is not None:
        params = replace(params, force_class=int(tissue_class))
    world = PhantomWorld(seed, params)
    m = PAINT_MARGIN
    lab = world.labels(-m, -m, w + 2 * m, h + 2 * m)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 77])
    stain = Stain.draw(rng, params.stain_jitter)
    rgb = paint(lab, seed, stain, params.pale, params.vesicular, params.fibre_haem)
    sigma = float(rng.uniform(*params.blur))
    noise = white_noise(seed, 9999, -m, -m, h + 2 * m, w + 2 * m)[..., None] * np.float32(1.6)
    img = finish(rgb, sigma, noise)[m:m + h, m:m + w]
    if jpeg and params.jpeg_quality is not None:
        img = jpeg_roundtrip(np.ascontiguousarray(img), int(rng.integers(*params.jpeg_quality, endpoint=True)))
    crop = (slice(m, m + h), slice(m, m + w))
    nuclei, _ = _relabel(lab.nucleus[crop])
    glands, old_g = _relabel(lab.gland[crop])
    kinds = lab.gland_kind[crop]
    gclass = np.where(glands > 0, np.where(kinds == KIND_SURFACE, SURFACE, GLAND), 0).astype(np.uint8)
    lumina, old_l = _relabel(lab.lumen[crop])
    # A lumen's gland: lumen k sits inside gland k (same 1-based index before relabelling).
    g_lut = np.zeros(int(lab.gland.max()) + 1, np.int32)
    g_lut[old_g] = np.arange(1, len(old_g) + 1)
    lumen_parent = g_lut[old_l]
    return PhantomTile(np.ascontiguousarray(img), nuclei, lab.nucleus_class[crop].copy(), glands,
                       gclass, lumina, lumen_parent, lab.tissue[crop].copy(), seed)
