"""Glands: crypts of normal mucosa and tumour glands, each with one lumen.

A gland is a star-shaped outline around its centre (an ellipse with a few Fourier
wobbles) and a lumen that follows it at a fraction of the radius, so the lumen is
always inside. Glands may touch: where two outlines overlap the higher-priority
gland keeps the pixels, never deep enough to reach the other's lumen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from cerberus_cli.synthetic.fields import CoarseFields
from cerberus_cli.synthetic.noise import hash_uniform
from cerberus_cli.synthetic.params import (
    KIND_NORMAL,
    KIND_TUMOUR,
    NORM,
    TUM,
    SceneParams,
)
from cerberus_cli.synthetic.placement import close_pairs, lattice_cells, matern_keep

N_ANGLES = 64
ANGLES = np.linspace(0, 2 * np.pi, N_ANGLES, endpoint=False)
GLAND_CELL = 180.0
CANDIDATES_PER_CELL = 8
ROUNDS = 3
#: Largest outer radius any gland can have (px); bounds the placement margin.
MAX_RADIUS = 135.0
STREAM = 1000


@dataclass
class Glands:
    """Placed glands (arrays of length n, sorted by ascending priority)."""

    gid: np.ndarray        # int64 global id
    x: np.ndarray
    y: np.ndarray
    priority: np.ndarray
    kind: np.ndarray       # KIND_NORMAL | KIND_TUMOUR
    radii: np.ndarray      # (n, N_ANGLES) outer radius per angle
    lumen: np.ndarray      # (n, N_ANGLES) lumen radius per angle

    def __len__(self) -> int:
        return len(self.gid)

    def outline(self, k: int) -> np.ndarray:
        """Outer polygon of gland k (N_ANGLES x 2, float)."""
        return np.column_stack([self.x[k] + self.radii[k] * np.cos(ANGLES),
                                self.y[k] + self.radii[k] * np.sin(ANGLES)])

    def lumen_outline(self, k: int) -> np.ndarray:
        return np.column_stack([self.x[k] + self.lumen[k] * np.cos(ANGLES),
                                self.y[k] + self.lumen[k] * np.sin(ANGLES)])

    def subset(self, keep: np.ndarray) -> Glands:
        return Glands(*(getattr(self, f)[keep] for f in
                        ("gid", "x", "y", "priority", "kind", "radii", "lumen")))


def radius_at(radii: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-angle radii (rows) at angles ``theta``."""
    t = np.mod(theta, 2 * np.pi) / (2 * np.pi) * N_ANGLES
    i0 = np.floor(t).astype(np.int64) % N_ANGLES
    f = t - np.floor(t)
    i1 = (i0 + 1) % N_ANGLES
    rows = np.arange(len(radii))
    return radii[rows, i0] * (1 - f) + radii[rows, i1] * f


def _shapes(u, kind: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Outer and lumen radii per angle for candidates of the given kinds."""
    n = len(kind)
    tum = kind == KIND_TUMOUR
    r0 = np.where(tum, 55 + 45 * u(1), 44 + 26 * u(1)) * scale
    aspect = np.where(tum, 1 + 1.0 * u(2), 1 + 0.7 * u(2) ** 2)
    orient = np.pi * u(3)
    a, b = r0 * np.sqrt(aspect), r0 / np.sqrt(aspect)
    phi = ANGLES[None, :] - orient[:, None]
    ell = (a * b)[:, None] / np.sqrt((b[:, None] * np.cos(phi)) ** 2 + (a[:, None] * np.sin(phi)) ** 2)
    wobble = np.zeros((n, N_ANGLES))
    amp = np.where(tum, 0.12, 0.035)
    for k in range(2, 6):
        wobble += (amp / k ** 0.7 * (2 * u(10 + k) - 1))[:, None] * np.cos(
            k * ANGLES[None, :] + 2 * np.pi * u(20 + k)[:, None])
    outer = ell * (1 + wobble)
    frac = np.where(tum, 0.35 + 0.25 * u(4), 0.16 + 0.16 * u(4))
    lwob = np.zeros((n, N_ANGLES))
    for k in range(2, 5):
        lwob += (0.08 / k * (2 * u(30 + k) - 1))[:, None] * np.cos(
            k * ANGLES[None, :] + 2 * np.pi * u(40 + k)[:, None])
    inner = outer * frac[:, None] * (1 + lwob)
    # Keep a ring thick enough for nuclei (normal crypts: basal nuclei + goblet cells).
    min_ring = np.where(tum, 24.0, 28.0) * scale
    inner = np.minimum(inner, outer - min_ring[:, None])
    inner = np.maximum(inner, 4.0)
    outer = np.minimum(outer, MAX_RADIUS * scale)
    return outer, inner


def place_glands(seed: int, params: SceneParams, fields: CoarseFields,
                 x0: float, y0: float, x1: float, y1: float) -> Glands:
    """Glands whose outline can reach the window ``[x0, x1) x [y0, y1)``.

    Candidates are drawn with margin so the thinning is exact for these glands.
    """
    scale = params.gland_scale
    reach = 2 * MAX_RADIUS * scale
    margin = (ROUNDS + 1) * reach + MAX_RADIUS * scale
    cell = GLAND_CELL * scale
    cx, cy = lattice_cells(x0 - margin, y0 - margin, x1 + margin, y1 + margin, cell)
    k = np.arange(CANDIDATES_PER_CELL)
    cx = np.repeat(cx, len(k))
    cy = np.repeat(cy, len(k))
    kk = np.tile(k, len(cx) // len(k))

    def u(attr: int) -> np.ndarray:
        return hash_uniform(seed, STREAM + attr, cx, cy, kk)

    x = (cx + u(5)) * cell
    y = (cy + u(6)) * cell
    region = fields.region_at(x, y)
    kind = np.where(region == TUM, KIND_TUMOUR, np.where(region == NORM, KIND_NORMAL, 0))
    ok = kind > 0
    gid = (cx.astype(np.int64) * 1_000_003 + cy.astype(np.int64)) * 16 + kk
    cand = Glands(gid[ok], x[ok], y[ok], u(0)[ok], kind[ok], *[np.zeros((ok.sum(), N_ANGLES))] * 2)
    sel = np.flatnonzero(ok)
    cand.radii, cand.lumen = _shapes(lambda a: u(a)[sel], cand.kind, scale)
    # Whole gland inside tissue; normal crypts also clear of the surface epithelium.
    rmax = cand.radii.max(axis=1)
    sdf = fields.sdf_at(cand.x, cand.y)
    need = rmax + 6 + np.where(cand.kind == KIND_NORMAL, params.surface_width, 0)
    cand = cand.subset(sdf > need)
    if len(cand) == 0:
        return cand
    # Conflicts: outlines may overlap a little (touching glands), lumina never.
    pairs = close_pairs(cand.x, cand.y, reach)
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        dx, dy = cand.x[j] - cand.x[i], cand.y[j] - cand.y[i]
        d = np.hypot(dx, dy)
        th = np.arctan2(dy, dx)
        ri = radius_at(cand.radii[i], th)
        rj = radius_at(cand.radii[j], th + np.pi)
        li = radius_at(cand.lumen[i], th)
        lj = radius_at(cand.lumen[j], th + np.pi)
        ring = np.minimum(ri - li, rj - lj)
        # Allowed overlap varies per pair so some glands touch and some do not.
        slack = ring * (0.45 * hash_uniform(seed, STREAM + 99, cand.gid[i], cand.gid[j]) - 0.25)
        need = np.maximum.reduce([ri + rj - slack,
                                  cand.radii[i].max(axis=1) + lj + 6,
                                  cand.radii[j].max(axis=1) + li + 6])
        pairs = pairs[d < need]
    keep = matern_keep(cand.priority, pairs, ROUNDS)
    out = cand.subset(keep)
    # Only glands that can touch the window; ascending priority (paint order).
    rmax = out.radii.max(axis=1) if len(out) else np.zeros(0)
    near = ((out.x + rmax >= x0) & (out.x - rmax < x1) & (out.y + rmax >= y0) & (out.y - rmax < y1))
    out = out.subset(near)
    return out.subset(np.argsort(out.priority, kind="stable"))


def inside_glands(glands: Glands, x: np.ndarray, y: np.ndarray, pad: np.ndarray | float,
                  min_priority: np.ndarray | None = None) -> np.ndarray:
    """Whether points (grown by ``pad``) reach any gland outline.

    With ``min_priority`` (per point), only glands of strictly higher priority count.
    """
    hit = np.zeros(len(x), dtype=bool)
    if len(glands) == 0 or len(x) == 0:
        return hit
    pad = np.broadcast_to(np.asarray(pad, dtype=np.float64), x.shape)
    rmax = glands.radii.max(axis=1)
    tree = cKDTree(np.column_stack([glands.x, glands.y]))
    reach = float(rmax.max() + pad.max())
    lists = tree.query_ball_point(np.column_stack([x, y]), reach)
    pi = np.repeat(np.arange(len(x)), [len(v) for v in lists])
    gi = np.fromiter((g for v in lists for g in v), dtype=np.int64, count=len(pi))
    if len(pi) == 0:
        return hit
    dx, dy = x[pi] - glands.x[gi], y[pi] - glands.y[gi]
    d = np.hypot(dx, dy)
    r = radius_at(glands.radii[gi], np.arctan2(dy, dx))
    inside = d < r + pad[pi]
    if min_priority is not None:
        inside &= glands.priority[gi] > min_priority[pi]
    hit[pi[inside]] = True
    return hit
