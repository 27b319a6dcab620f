"""Nuclei: where each cell type sits, what its nucleus looks like, no overlaps.

Cell types follow real colon tissue: epithelial nuclei basal and elongated in gland
rings and in the surface epithelium; spindle connective nuclei in stroma and muscle
(aligned with the fibres); small round dark lymphocytes; plasma cells with an
eccentric round nucleus in a purple cytoplasm; neutrophils with 3-4 lobes and
eosinophils with 2 lobes, each in its own cytoplasm.

Every nucleus is one to four elliptical lobes (touching, so one connected object)
and optionally a cytoplasm ellipse. Its footprint (cytoplasm, or nucleus grown by a
pixel) never overlaps another footprint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cerberus_cli.synthetic.fields import CoarseFields
from cerberus_cli.synthetic.glands import ANGLES, Glands, inside_glands, radius_at
from cerberus_cli.synthetic.noise import hash_u64, hash_uniform
from cerberus_cli.synthetic.params import (
    ADI,
    CONNECTIVE,
    DEB,
    EOSINOPHIL,
    EPITHELIAL,
    KIND_TUMOUR,
    LYM,
    LYMPHOCYTE,
    MUC,
    MUS,
    NEUTROPHIL,
    NORM,
    PLASMA,
    STR,
    TUM,
    SceneParams,
)
from cerberus_cli.synthetic.placement import (
    ellipse_conflicts,
    lattice_cells,
    matern_keep,
)

MAX_LOBES = 4
ROUNDS = 5
#: Largest footprint semi-axis (px); bounds the conflict reach.
MAX_EXTENT = 13.5
GAP = 0.8
CELL = 128.0
CANDIDATES_PER_CELL = 110
STREAM = 2000

#: Nuclei per 1000 px^2 outside glands, and the mix of types (neutrophil,
#: epithelial, lymphocyte, plasma, eosinophil, connective), per region class.
DENSITY = {NORM: 3.2, TUM: 1.6, LYM: 6.0, MUS: 0.9, STR: 0.8, DEB: 1.0, MUC: 0.15, ADI: 0.08}
MIX = {
    NORM: (0.03, 0.0, 0.36, 0.34, 0.07, 0.20),
    TUM: (0.08, 0.0, 0.25, 0.10, 0.02, 0.55),
    LYM: (0.01, 0.0, 0.84, 0.11, 0.01, 0.03),
    MUS: (0.0, 0.0, 0.03, 0.0, 0.0, 0.97),
    STR: (0.01, 0.0, 0.10, 0.04, 0.02, 0.83),
    DEB: (0.55, 0.0, 0.25, 0.05, 0.05, 0.10),
    MUC: (0.30, 0.0, 0.30, 0.10, 0.05, 0.25),
    ADI: (0.0, 0.0, 0.10, 0.0, 0.0, 0.90),
}


@dataclass
class Nuclei:
    """Placed nuclei (arrays of length n)."""

    nid: np.ndarray          # uint64 global id
    cls: np.ndarray          # nucleus class 1..6
    x: np.ndarray            # cell centre (footprint centre)
    y: np.ndarray
    priority: np.ndarray
    lobes: np.ndarray        # (n, MAX_LOBES, 5): cx, cy, a, b, theta
    nlobes: np.ndarray
    cyto: np.ndarray         # (n, 5): cx, cy, a, b, theta; a = 0 for none
    foot: np.ndarray         # (n, 3): a, b, theta of the footprint around (x, y)
    tumour: np.ndarray       # bool: atypical (tumour) epithelial nucleus

    def __len__(self) -> int:
        return len(self.nid)

    def subset(self, keep: np.ndarray) -> Nuclei:
        return Nuclei(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[Nuclei]) -> Nuclei:
        return Nuclei(*(np.concatenate([getattr(p, f) for p in parts]) for f in Nuclei.__dataclass_fields__))

    def polygons(self, vertices: int = 20) -> np.ndarray:
        """Lobe outlines (n, MAX_LOBES, vertices, 2); lobes past ``nlobes`` are junk."""
        t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        lob = self.lobes
        # A little irregularity per nucleus so outlines are not perfect ellipses.
        w2 = (hash_uniform(0, 7, self.nid.astype(np.int64)) - 0.5) * 0.12
        w3 = (hash_uniform(0, 8, self.nid.astype(np.int64)) - 0.5) * 0.08
        wob = 1 + w2[:, None] * np.cos(2 * t)[None] + w3[:, None] * np.cos(3 * t + 1.0)[None]
        ex = lob[..., 2:3] * np.cos(t) * wob[:, None, :]
        ey = lob[..., 3:4] * np.sin(t) * wob[:, None, :]
        c, s = np.cos(lob[..., 4:5]), np.sin(lob[..., 4:5])
        px = lob[..., 0:1] + ex * c - ey * s
        py = lob[..., 1:2] + ex * s + ey * c
        return np.stack([px, py], axis=-1)


def _empty(n: int) -> dict:
    return dict(lobes=np.zeros((n, MAX_LOBES, 5)), nlobes=np.ones(n, dtype=np.int64),
                cyto=np.zeros((n, 5)), foot=np.zeros((n, 3)), tumour=np.zeros(n, dtype=bool))


def _single(n: int, x, y, a, b, th) -> dict:
    d = _empty(n)
    d["lobes"][:, 0] = np.column_stack([x, y, a, b, th])
    d["foot"] = np.column_stack([a + GAP, b + GAP, th])
    return d


def shape_cells(cls: np.ndarray, x: np.ndarray, y: np.ndarray, u, orient: np.ndarray) -> dict:
    """Lobes, cytoplasm and footprint for non-epithelial cells of classes ``cls``."""
    n = len(cls)
    d = _empty(n)
    th = np.pi * u(1)
    lym = cls == LYMPHOCYTE
    if lym.any():
        r = 4.2 + 1.6 * u(2)
        asp = 1 + 0.18 * u(3)
        s = _single(n, x, y, r * np.sqrt(asp), r / np.sqrt(asp), th)
        for k in d:
            d[k][lym] = s[k][lym]
    con = cls == CONNECTIVE
    if con.any():
        a = 7.0 + 5.5 * u(2)
        b = 2.0 + 0.9 * u(3)
        s = _single(n, x, y, a, b, orient + 0.35 * (u(4) - 0.5))
        for k in d:
            d[k][con] = s[k][con]
    pla = cls == PLASMA
    if pla.any():
        ca, cb = 8.0 + 2.0 * u(2), 6.0 + 1.5 * u(3)
        r = 4.0 + 1.0 * u(4)
        off = ca - r - 1.2
        nx, ny = x + off * np.cos(th), y + off * np.sin(th)
        d["lobes"][pla, 0] = np.column_stack([nx, ny, r * 1.05, r / 1.05, th])[pla]
        d["cyto"][pla] = np.column_stack([x, y, ca, cb, th])[pla]
        d["foot"][pla] = np.column_stack([ca + GAP, cb + GAP, th])[pla]
    neu = cls == NEUTROPHIL
    if neu.any():
        rc = 7.0 + 1.5 * u(2)
        nl = np.where(u(3) < 0.5, 3, 4)
        lr = 2.2 + 0.5 * u(4)
        rho = 2.6 + 0.6 * u(5)
        step = 2 * np.arcsin(np.clip((2 * lr - 1.0) / (2 * rho), 0, 0.99))
        for k in range(MAX_LOBES):
            ang = th + (k - (nl - 1) / 2) * step
            lob = np.column_stack([x + rho * np.cos(ang), y + rho * np.sin(ang),
                                   lr * 1.1, lr / 1.1, ang + np.pi / 2])
            sel = neu & (k < nl)
            d["lobes"][sel, k] = lob[sel]
        d["nlobes"][neu] = nl[neu]
        d["cyto"][neu] = np.column_stack([x, y, rc, rc * 0.95, th])[neu]
        d["foot"][neu] = np.column_stack([rc + GAP, rc + GAP, th])[neu]
    eos = cls == EOSINOPHIL
    if eos.any():
        rc = 8.0 + 1.5 * u(2)
        lr = 3.1 + 0.6 * u(4)
        sep = 0.85 * lr
        for k, sgn in enumerate((-1, 1)):
            lob = np.column_stack([x + sgn * sep * np.cos(th), y + sgn * sep * np.sin(th),
                                   lr * 1.15, lr / 1.15, th + 0.4 * sgn])
            d["lobes"][eos, k] = lob[eos]
        d["nlobes"][eos] = 2
        d["cyto"][eos] = np.column_stack([x, y, rc, rc * 0.92, th])[eos]
        d["foot"][eos] = np.column_stack([rc + GAP, rc + GAP, th])[eos]
    return d


def _scale_cells(d: dict, x: np.ndarray, y: np.ndarray, scale: float) -> None:
    """Grow the cells of :func:`shape_cells` about their centres ``(x, y)`` in place."""
    lob, cyt = d["lobes"], d["cyto"]
    lob[..., 0] = x[:, None] + (lob[..., 0] - x[:, None]) * scale
    lob[..., 1] = y[:, None] + (lob[..., 1] - y[:, None]) * scale
    lob[..., 2:4] *= scale
    cyt[:, 0] = x + (cyt[:, 0] - x) * scale
    cyt[:, 1] = y + (cyt[:, 1] - y) * scale
    cyt[:, 2:4] *= scale
    d["foot"][:, :2] = (d["foot"][:, :2] - GAP) * scale + GAP


def _gland_nuclei(seed: int, glands: Glands) -> Nuclei | None:
    """Epithelial nuclei of gland rings: basal row (normal) or stratified (tumour)."""
    parts = []
    for k in range(len(glands)):
        gid = int(glands.gid[k])
        R, L = glands.radii[k], glands.lumen[k]
        perim = float(np.sum(np.hypot(np.diff(np.r_[R, R[0]] * np.cos(np.r_[ANGLES, 0])),
                                      np.diff(np.r_[R, R[0]] * np.sin(np.r_[ANGLES, 0])))))
        tum = glands.kind[k] == KIND_TUMOUR
        rows = 3 if tum else 1
        n = int(perim / (8.0 if tum else 10.5)) * rows
        idx = np.arange(n)

        def u(attr: int) -> np.ndarray:
            return hash_uniform(seed, STREAM + 100 + attr, gid, idx)

        if tum:
            theta = 2 * np.pi * u(0)
        else:
            theta = (idx + 0.35 * (u(0) - 0.5)) / n * 2 * np.pi
        r_out = radius_at(np.repeat(R[None], n, 0), theta)
        r_in = radius_at(np.repeat(L[None], n, 0), theta)
        # Boundary normal from the outline's local slope.
        rr = np.repeat(R[None], n, 0)
        dr = (radius_at(rr, theta + 0.02) - radius_at(rr, theta - 0.02)) / 0.04
        nx = r_out * np.cos(theta) + dr * np.sin(theta)
        ny = r_out * np.sin(theta) - dr * np.cos(theta)
        nn = np.hypot(nx, ny)
        nx, ny = nx / nn, ny / nn
        if tum:
            a = 7.0 + 4.0 * u(1)
            b = 3.6 + 2.0 * u(2)
            depth = a + 1.5 + (r_out - r_in - 2 * a - 3.5) * u(3)
            tilt = 0.5 * (u(4) - 0.5)
        else:
            a = 6.5 + 2.5 * u(1)
            b = 2.8 + 0.9 * u(2)
            depth = a + 2.0 + 2.5 * u(3)
            tilt = 0.12 * (u(4) - 0.5)
        bx = glands.x[k] + r_out * np.cos(theta)
        by = glands.y[k] + r_out * np.sin(theta)
        cx, cy = bx - depth * nx, by - depth * ny
        th = np.arctan2(ny, nx) + tilt
        d = _single(n, cx, cy, a, b, th)
        d["tumour"][:] = tum
        nid = hash_u64_ids(seed, gid, idx)
        part = Nuclei(nid, np.full(n, EPITHELIAL), cx, cy, 2 + u(9), **d)
        # Inside its own ring: clear of the lumen and of the outline.
        dist = np.hypot(cx - glands.x[k], cy - glands.y[k])
        ang = np.arctan2(cy - glands.y[k], cx - glands.x[k])
        rr = radius_at(np.repeat(R[None], n, 0), ang)
        ll = radius_at(np.repeat(L[None], n, 0), ang)
        ok = (dist + a < rr - 1.0) & (dist - a > ll + 1.5)
        ok &= ~inside_glands(glands, cx, cy, a + 1.0, np.full(n, glands.priority[k]))
        parts.append(part.subset(ok))
    return Nuclei.concat(parts) if parts else None


def hash_u64_ids(seed: int, key: int, idx: np.ndarray) -> np.ndarray:
    """Global nucleus ids (uint64) from an owner key and an index."""
    return hash_u64(seed, STREAM + 500, key, idx)


def _background_nuclei(seed: int, params: SceneParams, fields: CoarseFields, glands: Glands,
                       x0: float, y0: float, x1: float, y1: float) -> Nuclei:
    """Cells outside glands (stroma, lamina propria, infiltrates) and surface epithelium."""
    cx, cy = lattice_cells(x0, y0, x1, y1, CELL)
    kk = np.tile(np.arange(CANDIDATES_PER_CELL), len(cx))
    cx = np.repeat(cx, CANDIDATES_PER_CELL)
    cy = np.repeat(cy, CANDIDATES_PER_CELL)

    def u(attr: int) -> np.ndarray:
        return hash_uniform(seed, STREAM + attr, cx, cy, kk)

    x = (cx + u(30)) * CELL
    y = (cy + u(31)) * CELL
    region = fields.region_at(x, y)
    sdf = fields.sdf_at(x, y)
    dens = np.zeros(len(x))
    for cls, v in DENSITY.items():
        dens[region == cls] = v * params.nuclei_density
    accept = u(32) < dens / 1000 * CELL * CELL / CANDIDATES_PER_CELL
    surface = (region == NORM) & (sdf > 0) & (sdf < params.surface_width + 4)
    # Surface epithelium: a row of basal columnar nuclei, denser candidates.
    accept |= surface & (u(32) < 0.35)
    sel = np.flatnonzero(accept & (sdf > 0))
    x, y, region, sdf, surface = x[sel], y[sel], region[sel], sdf[sel], surface[sel]
    key = ((cx * 1_000_003 + cy) * 256 + kk)[sel]
    # Draw the type from the region's mix.
    cum = np.zeros((len(x), 6))
    for cls, mix in MIX.items():
        cum[region == cls] = np.cumsum(mix)
    cumn = cum / cum[:, -1:].clip(1e-9)
    cls_draw = 1 + np.sum(u(33)[sel][:, None] > cumn[:, :-1], axis=1)
    # Fibre orientation (spindles follow collagen and muscle fibres).
    orient = fields.orient_at(x, y)
    d = shape_cells(cls_draw, x, y, lambda a: u(a)[sel], orient)
    if params.nucleus_scale != 1.0:
        _scale_cells(d, x, y, params.nucleus_scale)
    nuc = Nuclei(hash_u64_ids(seed, 0, key), cls_draw, x, y, u(34)[sel], **d)
    # Surface epithelium nuclei: moved to the basal side, long axis across the band.
    if surface.any():
        s = np.flatnonzero(surface)
        gx, gy = fields.sdf_gradient_at(x[s], y[s])
        us = u(35)[sel][s]
        a = 6.5 + 2.5 * u(36)[sel][s]
        b = 2.8 + 0.9 * u(37)[sel][s]
        target = params.surface_width - a - 2.0 - 2.5 * us
        nx = x[s] + (target - sdf[s]) * gx
        ny = y[s] + (target - sdf[s]) * gy
        e = _single(len(s), nx, ny, a, b, np.arctan2(gy, gx))
        nuc.cls[s] = EPITHELIAL
        nuc.x[s], nuc.y[s] = nx, ny
        nuc.priority[s] = 2 + us
        for k in e:
            getattr(nuc, k)[s] = e[k]
        # The projection is approximate; keep only nuclei that sit inside the band.
        sd = fields.sdf_at(nx, ny)
        bad = (sd - a < 2.0) | (sd + a > params.surface_width - 1.0) | (fields.region_at(nx, ny) != NORM)
        keep = np.ones(len(nuc), dtype=bool)
        keep[s[bad]] = False
        nuc = nuc.subset(keep)
        surface = surface[keep]
    ext = nuc.foot[:, 0]
    ok = fields.sdf_at(nuc.x, nuc.y) > ext + 1.0
    # Surface nuclei lie wholly in the band, other cells wholly outside it.
    in_band = np.zeros((5, len(nuc)), dtype=bool)
    for k, (dx, dy) in enumerate(((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))):
        px, py = nuc.x + dx * (ext + 1), nuc.y + dy * (ext + 1)
        sd = fields.sdf_at(px, py)
        in_band[k] = (fields.region_at(px, py) == NORM) & (sd < params.surface_width + 1.0)
    ok &= np.where(surface, in_band.all(axis=0), ~in_band.any(axis=0))
    ok &= ~inside_glands(glands, nuc.x, nuc.y, ext + 1.0)
    return nuc.subset(ok)


def place_nuclei(seed: int, params: SceneParams, fields: CoarseFields, glands: Glands,
                 x0: float, y0: float, x1: float, y1: float) -> Nuclei:
    """Nuclei whose footprint can reach the window, non-overlapping.

    ``glands`` must include every gland within ``margin()`` of the window.
    """
    m = margin(params.nucleus_scale)
    parts = [_background_nuclei(seed, params, fields, glands, x0 - m, y0 - m, x1 + m, y1 + m)]
    g = _gland_nuclei(seed, glands)
    if g is not None:
        parts.append(g)
    nuc = Nuclei.concat(parts)
    inwin = (nuc.x > x0 - m) & (nuc.x < x1 + m) & (nuc.y > y0 - m) & (nuc.y < y1 + m)
    nuc = nuc.subset(inwin)
    conf = ellipse_conflicts(nuc.x, nuc.y, nuc.foot[:, 0], nuc.foot[:, 1], nuc.foot[:, 2], 0.0)
    nuc = nuc.subset(matern_keep(nuc.priority, conf, ROUNDS))
    e = MAX_EXTENT * max(params.nucleus_scale, 1.0) + 1
    near = (nuc.x > x0 - e) & (nuc.x < x1 + e) & (nuc.y > y0 - e) & (nuc.y < y1 + e)
    nuc = nuc.subset(near)
    return nuc.subset(np.argsort(nuc.nid, kind="stable"))


def margin(scale: float = 1.0) -> float:
    """Candidate margin that makes the thinning exact inside a window (``scale``: the
    scene's ``nucleus_scale``)."""
    ext = MAX_EXTENT * max(scale, 1.0)
    return (ROUNDS + 1) * (2 * ext + GAP) + ext
