"""Paint H&E from label layers: stain densities per structure, then RGB.

Every structure gets haematoxylin (H) and eosin (E) densities with its own texture
(collagen fibres, muscle streaks, mucin wisps, necrotic blotches, chromatin grain),
all from position-keyed noise so neighbouring blocks of a slide agree. The label
layers are never changed here: the image follows the labels exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from cerberus_cli.synthetic.glands import radius_at
from cerberus_cli.synthetic.noise import hash_uniform, white_noise
from cerberus_cli.synthetic.params import (
    ADI,
    BACK,
    DEB,
    EOSINOPHIL,
    KIND_NORMAL,
    KIND_SURFACE,
    KIND_TUMOUR,
    LYM,
    MUC,
    MUS,
    NEUTROPHIL,
    NORM,
    PLASMA,
    STR,
    TUM,
)
from cerberus_cli.synthetic.placement import lattice_cells
from cerberus_cli.synthetic.scene import Labels
from cerberus_cli.synthetic.stain import Stain

#: How far (px) textures reach: a block painted with this margin matches its neighbours.
PAINT_MARGIN = 48
N_ORIENT = 6
ADIPOCYTE_CELL = 95.0

# Nuclear haematoxylin density per nucleus class (index = class id).
_NUC_H = np.array([0.0, 2.0, 1.55, 2.25, 1.75, 1.8, 1.85], dtype=np.float32)


class _Textures:
    """Unit-variance noise textures of one window, computed on demand."""

    def __init__(self, seed: int, x0: int, y0: int, h: int, w: int, orient_at) -> None:
        self.seed, self.x0, self.y0, self.h, self.w = seed, x0, y0, h, w
        self.orient_at = orient_at
        self._cache: dict = {}

    def white(self, stream: int) -> np.ndarray:
        key = ("w", stream)
        if key not in self._cache:
            self._cache[key] = white_noise(self.seed, 500 + stream, self.x0, self.y0, self.h, self.w)
        return self._cache[key]

    def smooth(self, stream: int, sigma: float) -> np.ndarray:
        """Gaussian-smoothed noise of unit variance (blobs of about ``sigma`` px)."""
        key = ("s", stream, sigma)
        if key in self._cache:
            return self._cache[key]
        if sigma < 4:
            g = cv2.GaussianBlur(self.white(stream), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            # Blurred white noise has std 1 / (2 sqrt(pi) sigma); rescale to 1.
            self._cache[key] = g * np.float32(2 * np.sqrt(np.pi) * sigma)
            return self._cache[key]
        # Broad blobs: smooth on a global grid 4x coarser, then interpolate.
        f = 4
        pad = int(np.ceil(3 * sigma / f)) + 2
        qx0, qy0 = self.x0 // f - pad, self.y0 // f - pad
        qw = -(-(self.x0 + self.w) // f) + pad - qx0
        qh = -(-(self.y0 + self.h) // f) + pad - qy0
        q = white_noise(self.seed, 800 + stream, qx0, qy0, qh, qw)
        q = cv2.GaussianBlur(q, (0, 0), sigma / f) * np.float32(2 * np.sqrt(np.pi) * sigma / f)
        up = cv2.resize(q, (qw * f, qh * f), interpolation=cv2.INTER_LINEAR)
        ox, oy = self.x0 - qx0 * f, self.y0 - qy0 * f
        self._cache[key] = np.ascontiguousarray(up[oy:oy + self.h, ox:ox + self.w])
        return self._cache[key]

    def fibres(self, stream: int, length: float, width: float) -> np.ndarray:
        """Streaks along the local fibre orientation (about unit variance).

        Computed at half resolution on a global half-pixel grid (about ten times
        cheaper; streaks come out a pixel wider) and upsampled bilinearly.
        """
        key = ("f", stream, length, width)
        if key in self._cache:
            return self._cache[key]
        half = int(np.ceil(2.5 * length / 2))
        hx0, hy0 = self.x0 // 2 - 1, self.y0 // 2 - 1
        hw = (self.x0 + self.w) // 2 + 2 - hx0
        hh = (self.y0 + self.h) // 2 + 2 - hy0
        src = white_noise(self.seed, 700 + stream, hx0 - half, hy0 - half, hh + 2 * half, hw + 2 * half)
        gx, gy = np.meshgrid(np.arange(hx0, hx0 + hw) * 2.0, np.arange(hy0, hy0 + hh) * 2.0)
        orient = self.orient_at(gx, gy)
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
        t = np.mod(orient, np.pi) / np.pi * N_ORIENT
        i0 = np.floor(t).astype(np.int64) % N_ORIENT
        f = (t - np.floor(t)).astype(np.float32)
        out = np.zeros((hh, hw), np.float32)
        for k in range(N_ORIENT):
            th = k * np.pi / N_ORIENT
            along = xx * np.cos(th) + yy * np.sin(th)
            across = -xx * np.sin(th) + yy * np.cos(th)
            ker = np.exp(-0.5 * (along / (length / 2)) ** 2 - 0.5 * (across / max(width / 2, 0.5)) ** 2)
            ker /= np.sqrt((ker ** 2).sum())
            # 'valid' part only: the source was drawn with the kernel's reach around it.
            resp = cv2.filter2D(src, -1, ker)[half:half + hh, half:half + hw]
            wgt = np.where(i0 == k, 1 - f, 0) + np.where((i0 + 1) % N_ORIENT == k, f, 0)
            out += resp * wgt.astype(np.float32)
        # Bilinear upsampling: full-res x sits at half-res x / 2.
        # zeros, not empty: the last odd row and column are never interpolated (cropped later)
        up = np.zeros((hh * 2, hw * 2), np.float32)
        up[0::2, 0::2] = out
        up[0::2, 1:-1:2] = 0.5 * (out[:, :-1] + out[:, 1:])
        up[1:-1:2, :] = 0.5 * (up[0:-2:2, :] + up[2::2, :])
        ox, oy = self.x0 - 2 * hx0, self.y0 - 2 * hy0
        res = np.ascontiguousarray(up[oy:oy + self.h, ox:ox + self.w])
        self._cache[key] = res
        return res


    def wavy_fibres(self, stream: int, length: float, width: float) -> np.ndarray:
        """Thin crumpled fibres: :meth:`fibres` displaced by a smooth random field."""
        key = ("v", stream, length, width)
        if key not in self._cache:
            gx, gy = np.meshgrid(np.arange(self.w, dtype=np.float32), np.arange(self.h, dtype=np.float32))
            dx = gx + np.float32(3.0) * self.smooth(stream + 1, 5.0)
            dy = gy + np.float32(3.0) * self.smooth(stream + 2, 5.0)
            self._cache[key] = cv2.remap(self.fibres(stream, length, width), dx, dy, cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT)
        return self._cache[key]


def _adipocyte_borders(seed: int, x0: int, y0: int, h: int, w: int) -> np.ndarray:
    """Thin walls of fat cells: Voronoi borders of seeded points (bool HxW)."""
    pad = int(2 * ADIPOCYTE_CELL)
    cx, cy = lattice_cells(x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad, ADIPOCYTE_CELL)
    px = (cx + 0.15 + 0.7 * hash_uniform(seed, 3001, cx, cy)) * ADIPOCYTE_CELL
    py = (cy + 0.15 + 0.7 * hash_uniform(seed, 3002, cx, cy)) * ADIPOCYTE_CELL
    canvas = np.ones((h + 2 * pad, w + 2 * pad), np.uint8)
    ix = np.round(px - x0 + pad).astype(np.int64)
    iy = np.round(py - y0 + pad).astype(np.int64)
    ok = (ix >= 0) & (ix < canvas.shape[1]) & (iy >= 0) & (iy < canvas.shape[0])
    canvas[iy[ok], ix[ok]] = 0
    _, lab = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    edge = np.zeros(lab.shape, bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    return edge[pad:pad + h, pad:pad + w]


def _goblets(labels: Labels, h: int, w: int) -> np.ndarray:
    """Goblet-cell mucin vacuoles in the apical part of normal crypts (bool HxW)."""
    mask = np.zeros((h, w), np.uint8)
    g = labels.glands
    for k in np.flatnonzero(g.kind == KIND_NORMAL):
        n = max(6, int(2 * np.pi * g.radii[k].mean() / 17))
        idx = np.arange(n)
        u = lambda a: hash_uniform(0, 3100 + a, int(g.gid[k]), idx)  # noqa: E731
        th = (idx + 0.5 + 0.3 * (u(0) - 0.5)) / n * 2 * np.pi
        r_out = radius_at(np.repeat(g.radii[k][None], n, 0), th)
        r_in = radius_at(np.repeat(g.lumen[k][None], n, 0), th)
        rad = 4.0 + 2.5 * u(1)
        depth = np.maximum(r_in + rad + 1.5, r_out - 17 - 2 * u(2))
        xs = g.x[k] + depth * np.cos(th) - labels.x0
        ys = g.y[k] + depth * np.sin(th) - labels.y0
        for x, y, r, keep in zip(xs, ys, rad, u(3) < 0.8):
            if keep:
                cv2.ellipse(mask, (int(round(x * 16)), int(round(y * 16))),
                            (int(r * 16 * 0.8), int(r * 16 * 1.15)),
                            float(np.degrees(np.arctan2(y + labels.y0 - g.y[k], x + labels.x0 - g.x[k]))),
                            0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _disc_sites(seed: int, stream: int, x0: float, y0: float, x1: float, y1: float,
                cell: float, r0: float, r1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded disc centres (global px) and radii, one per lattice cell of a window."""
    cx, cy = lattice_cells(x0 - r1, y0 - r1, x1 + r1, y1 + r1, cell)
    px = (cx + hash_uniform(seed, stream, cx, cy)) * cell
    py = (cy + hash_uniform(seed, stream + 1, cx, cy)) * cell
    return px, py, r0 + (r1 - r0) * hash_uniform(seed, stream + 2, cx, cy)


def _draw_discs(mask: np.ndarray, x0: int, y0: int, px, py, rad) -> None:
    for x, y, r in zip(px - x0, py - y0, rad):
        cv2.circle(mask, (int(round(x * 16)), int(round(y * 16))), int(r * 16), 1, -1, cv2.LINE_8, 4)


def _red_cells(seed: int, labels: Labels, h: int, w: int) -> np.ndarray:
    """Red blood cells in small capillaries: tight clusters in stroma and mucosa."""
    x0, y0 = labels.x0, labels.y0
    mask = np.zeros((h, w), np.uint8)
    vx, vy, vr = _disc_sites(seed, 3300, x0, y0, x0 + w, y0 + h, 150.0, 9.0, 16.0)
    for x, y, r in zip(vx, vy, vr):
        # Red cells of the global 9 px lattice whose centre lies in this vessel.
        px, py, pr = _disc_sites(seed, 3310, x - r, y - r, x + r, y + r, 9.0, 3.0, 3.8)
        inside = np.hypot(px - x, py - y) < r - 2
        _draw_discs(mask, x0, y0, px[inside], py[inside], pr[inside])
    return mask.astype(bool)


def _surface_goblets(seed: int, labels: Labels, h: int, w: int) -> np.ndarray:
    """Goblet-cell mucin in the apical half of the surface epithelium."""
    band = labels.gland_kind == KIND_SURFACE
    if not band.any():
        return band
    ys, xs = np.nonzero(band)
    x0, y0 = labels.x0, labels.y0
    mask = np.zeros((h, w), np.uint8)
    # Only the band's bounding box: the lattice is global, so this changes nothing else.
    _draw_discs(mask, x0, y0, *_disc_sites(seed, 3320, x0 + xs.min(), y0 + ys.min(),
                                            x0 + xs.max() + 1, y0 + ys.max() + 1, 16.0, 3.5, 5.0))
    dots = mask.astype(bool)
    return dots & band & (labels.sdf > 4) & (labels.sdf < 13)


def _chromatin(seed: int, nid: np.ndarray, nuc: np.ndarray, m: np.ndarray, tx: _Textures,
               strength: float) -> np.ndarray:
    """Factor on nuclear haematoxylin for real chromatin (1 outside nuclei).

    Per nucleus: overall darkness (pale to hyperchromatic) and openness (how pale the
    nucleoplasm is under the membrane); per pixel: chromatin clumps and nucleoli.
    """
    ids = nid.astype(np.int64)
    dark = np.concatenate([[1.0], 1 - 0.2 * strength * hash_uniform(seed, 3202, ids)]).astype(np.float32)
    openness = np.concatenate([[0.0], strength * hash_uniform(seed, 3203, ids)]).astype(np.float32)
    depth = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
    core = np.clip((depth - 1.0) / 2.5, 0, 1)
    clumps = 1 + 0.3 * strength * np.clip(tx.smooth(25, 1.2), -1.5, 2.0)
    nucleoli = ((tx.smooth(26, 1.0) > 2.0) & (depth > 2.5)).astype(np.float32)
    f = dark[nuc] * (1 - 0.4 * openness[nuc] * core) * clumps + 0.6 * openness[nuc] * nucleoli
    return np.where(m, f, 1.0).astype(np.float32)


def paint(labels: Labels, seed: int, stain: Stain, pale: float = 0.0,
          vesicular: float = 0.0, fibre_haem: float = 0.0) -> np.ndarray:
    """RGB float32 image (before blur and noise) of a window's label layers.

    ``pale`` (0..1) adds the pale tissue of whole slides, ``vesicular`` real chromatin
    texture, ``fibre_haem`` purple fibres and strands (see :class:`SceneParams`).
    """
    h, w = labels.tissue.shape
    tx = _Textures(seed, labels.x0, labels.y0, h, w, labels.fields.orient_at)
    T = labels.tissue
    H = np.zeros((h, w), np.float32)
    E = np.zeros((h, w), np.float32)
    med = tx.smooth(2, 3.0)
    fine = tx.smooth(1, 0.8)

    def put(mask: np.ndarray, hv, ev) -> None:
        if mask.any():
            H[mask] = (hv if np.isscalar(hv) else hv[mask])
            E[mask] = (ev if np.isscalar(ev) else ev[mask])

    present = set(np.unique(T).tolist())
    if STR in present or TUM in present:
        fib = tx.fibres(3, 7.0, 0.9)
        wav = np.tanh(fib)
        cleft = np.clip((-fib - 0.9) * 1.5, 0, 1)
        e_str = (0.55 + 0.28 * wav + 0.06 * med) * (1 - 0.75 * cleft)
        e_loose = e_str
        if pale > 0:
            # Oedematous stroma: patches where the fibres thin out and gaps open.
            loose = pale * np.clip((tx.smooth(21, 60.0) - 0.2) / 0.6, 0, 1)
            gaps = np.clip((tx.smooth(22, 5.0) + 0.1) * 1.5, 0, 1)
            e_loose = e_str * (1 - loose * (0.5 + 0.3 * gaps))
        h_str = 0.12 + 0.03 * med
        if fibre_haem > 0:
            # Thick wavy strands and fibres tinted by haematoxylin: purple, not nuclei.
            wavy = np.tanh(tx.wavy_fibres(30, 5.0, 0.7))
            gap = np.clip((-wavy - 0.3) * 1.5, 0, 1) * fibre_haem
            strands = np.clip((tx.fibres(24, 16.0, 2.5) - 0.4) * 1.2, 0, 1)
            # Sparse thin crumpled strands as dark as a pale nucleus: only shape tells them apart.
            dark = np.clip(tx.wavy_fibres(31, 12.0, 1.0) - 1.0, 0, 1)
            myxoid = np.clip(tx.smooth(27, 30.0), 0, 1) * (e_loose < 0.4)
            e_loose = (e_loose * (1 + 0.35 * fibre_haem * wavy) + 0.5 * fibre_haem * strands) * (1 - 0.8 * gap)
            h_str = h_str + fibre_haem * ((0.28 + 0.15 * wavy + 0.6 * strands + 1.5 * dark) * (1 - 0.8 * gap)
                                          + 0.2 * myxoid)
        put(T == STR, h_str, e_loose)
        put(T == TUM, 0.18 + 0.04 * med, 0.85 * e_str + 0.06)
    if NORM in present:
        put(T == NORM, 0.22 + 0.05 * med, 0.32 + 0.08 * med)
    if LYM in present:
        put(T == LYM, 0.24 + 0.05 * med, 0.27 + 0.06 * med)
    if MUS in present:
        mf = tx.fibres(4, 16.0, 0.8)
        put(T == MUS, 0.09 + 0.02 * med, 0.88 + 0.12 * np.tanh(mf) + 0.05 * med)
    if MUC in present:
        wisp = np.clip(tx.fibres(5, 10.0, 1.5) * 0.5 + 0.35 * tx.smooth(6, 12.0), -1, 1.5)
        put(T == MUC, 0.14 + 0.1 * wisp, 0.05 + 0.04 * wisp)
    if DEB in present:
        b1, b2 = tx.smooth(7, 6.0), tx.smooth(8, 2.0)
        dust = np.clip((tx.smooth(9, 0.7) - 2.3) * 2.5, 0, 1.2)
        put(T == DEB, 0.28 + 0.15 * b2 + dust, 0.45 + 0.18 * b1)
    if ADI in present:
        walls = _adipocyte_borders(seed, labels.x0, labels.y0, h, w)
        adi = T == ADI
        put(adi, 0.0, 0.02)
        if pale > 0:
            # The outermost fat cells are closed by their membrane along the glass.
            walls = walls | ((labels.sdf < 2.0) & (labels.sdf > -1.0))
        put(adi & walls, 0.05, 0.55 + 0.1 * med)

    # Glands: epithelial cytoplasm, goblet mucin, brush border, lumen contents.
    gk = labels.gland_kind
    ring = (labels.gland > 0) & (labels.lumen == 0)
    if ring.any():
        halo = (cv2.dilate((labels.gland > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (labels.gland == 0)
        H[halo] *= 0.5
        E[halo] *= 0.45
        put(ring & (gk == KIND_NORMAL), 0.18 + 0.03 * fine, 0.3 + 0.05 * fine)
        put(ring & (gk == KIND_SURFACE), 0.18 + 0.03 * fine, 0.36 + 0.05 * fine)
        put(ring & (gk == KIND_TUMOUR), 0.36 + 0.06 * fine, 0.42 + 0.07 * fine)
        gob = _goblets(labels, h, w) & ring & (gk == KIND_NORMAL)
        put(gob, 0.1 + 0.04 * med, 0.04)
        lum = labels.lumen > 0
        apical = ring & (cv2.dilate(lum.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
        E[apical] += 0.22
        put(lum, 0.05 + 0.03 * med, 0.07 + 0.04 * med)
        tl = lum & (gk == KIND_TUMOUR)
        if tl.any():
            b1 = tx.smooth(7, 6.0)
            dust = np.clip((tx.smooth(9, 0.7) - 2.3) * 2.5, 0, 1.2)
            dirty = np.clip(tx.smooth(10, 10.0) + 0.3, 0, 1)
            put(tl, 0.05 + dirty * (0.25 + 0.1 * b1) + dust * dirty, 0.07 + dirty * (0.4 + 0.15 * b1))
        surf_apical = (gk == KIND_SURFACE) & (labels.sdf < 2.5)
        E[surf_apical] += 0.25
        put(_surface_goblets(seed, labels, h, w) & (labels.nucleus == 0), 0.12 + 0.04 * med, 0.04)
    # Capillaries with red cells between the other structures of stroma and mucosa.
    loose = np.isin(T, (NORM, STR, TUM, LYM)) & (labels.gland == 0) & (labels.cytoplasm == 0)
    if loose.any():
        rbc = _red_cells(seed, labels, h, w) & loose
        put(rbc, 0.02, 1.25 + 0.1 * fine)

    # Cytoplasm of plasma cells, eosinophils and neutrophils.
    cy = labels.cytoplasm
    put(cy == PLASMA, 0.34 + 0.04 * fine, 0.38 + 0.04 * fine)
    gran = np.clip(fine, -1.5, 2.5)
    put(cy == EOSINOPHIL, 0.04, 1.0 + 0.3 * gran)
    put(cy == NEUTROPHIL, 0.1 + 0.02 * fine, 0.22 + 0.04 * fine)

    # Nuclei: class darkness, per-nucleus variation, chromatin grain, membrane.
    nuc = labels.nucleus
    m = nuc > 0
    if m.any():
        n = labels.nuclei
        var = (0.88 + 0.24 * hash_uniform(seed, 3200, n.nid.astype(np.int64))).astype(np.float32)
        base = _NUC_H[n.cls] * var
        base[n.tumour] *= 1.05
        lut = np.concatenate([[0.0], base]).astype(np.float32)
        hn = lut[nuc]
        tum = np.concatenate([[False], n.tumour])[nuc]
        grain = np.where(tum, 0.9 + 0.25 * np.clip(fine, -1.5, 1.5), 1 + 0.12 * np.clip(fine, -2, 2))
        cls = labels.nucleus_class
        clock = (cls == PLASMA) & (fine > 0.9)
        hn = hn * grain * np.where(clock, 1.35, 1.0)
        if vesicular > 0:
            hn = hn * _chromatin(seed, n.nid, nuc, m, tx, vesicular)
        inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        edge = m & ~inner
        hn = np.where(edge, hn * np.where(tum, 1.45, 1.15), hn)
        H[m] = hn[m]
        E[m] = 0.1 + 0.03 * fine[m]
    glass = T == BACK
    if pale > 0:
        # Thin-section patches: every stain faint (nuclei less so: they stay visible).
        faint = pale * 0.6 * np.clip((tx.smooth(20, 160.0) - 0.4) / 0.8, 0, 1)
        H *= np.where(m, 1 - 0.5 * faint, 1 - faint)
        E *= 1 - faint
    # Glass: a faint dusting only.
    H[glass] = np.clip(0.01 * med[glass], 0, None)
    E[glass] = np.clip(0.01 * med[glass], 0, None)
    np.clip(H, 0, 3, out=H)
    np.clip(E, 0, 3, out=E)
    return stain.to_rgb(H, E)

