"""Things on a slide's glass that are not tissue: pen marks, dust, air bubbles, the glass edge.

They are the negatives a tissue detector must leave out. Each is an optical density
(natural log, per R, G, B channel) added to the painted image, drawn only on glass
well away from tissue, so the truth (the label layers) is unchanged. Like the rest
of the phantom they are pure functions of the seed and the global position: sites
sit on a coarse global lattice, so every block of a slide draws the same marks.
"""

from __future__ import annotations

import cv2
import numpy as np

from cerberus_cli.synthetic.noise import hash_uniform
from cerberus_cli.synthetic.placement import lattice_cells

#: World px per artefact site (at most one mark per cell).
SITE_CELL = 1024.0
#: How far a mark reaches from its site (px).
REACH = 760.0
#: Marks keep this distance (px) from tissue.
CLEARANCE = 6.0
_SHIFT = 4

#: Ink optical densities (R, G, B): blue and green markers absorb red most, black all.
INKS = np.array([[1.5, 0.85, 0.25], [1.2, 0.4, 0.95], [1.7, 1.6, 1.55]], np.float32)
#: Dust and lint: brownish grey (blue absorbed a little more than green).
DUST = np.array([0.9, 1.0, 1.15], np.float32)
#: Bubble rims and the glass edge: neutral grey.
GREY = np.array([1.0, 1.0, 1.0], np.float32)


def _site_values(seed: int, cx: np.ndarray, cy: np.ndarray, n: int) -> list[np.ndarray]:
    return [hash_uniform(seed, 4100 + k, cx, cy) for k in range(n)]


def _pen(canvas: np.ndarray, x: float, y: float, u: list[np.ndarray], i: int) -> int:
    """A curved marker stroke; returns the ink index."""
    length = 500 + 700 * u[2][i]
    angle = np.pi * u[3][i]
    bend = (u[4][i] - 0.5) * 0.9 * length
    t = np.linspace(-0.5, 0.5, 40)
    dx, dy = np.cos(angle), np.sin(angle)
    px = x + t * length * dx - (1 - 4 * t * t) * bend * dy
    py = y + t * length * dy + (1 - 4 * t * t) * bend * dx
    pts = np.round(np.column_stack([px, py]) * (1 << _SHIFT)).astype(np.int32)
    width = int(30 + 60 * u[5][i])
    cv2.polylines(canvas, [pts], False, 1.0, width, cv2.LINE_AA, _SHIFT)
    return int(u[6][i] * len(INKS)) % len(INKS)


def _dust(canvas: np.ndarray, x: float, y: float, seed: int, site: int) -> None:
    """A cluster of specks and a lint fibre around the site."""
    k = np.arange(24)
    r = [hash_uniform(seed, 4200 + j, site, k) for j in range(4)]
    for a, b, c, d in zip(*r):
        sx = x + (a - 0.5) * 300
        sy = y + (b - 0.5) * 300
        cv2.circle(canvas, (int(sx * 16), int(sy * 16)), int((1.5 + 7 * c ** 2) * 16),
                   float(0.5 + 0.9 * d), -1, cv2.LINE_AA, _SHIFT)
    t = np.linspace(0, 1, 20)
    lx = x + 120 * np.cos(6 * r[0][0] + 3 * t) * t
    ly = y + 160 * np.sin(6 * r[1][0] + 2 * t) * t
    pts = np.round(np.column_stack([lx, ly]) * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(canvas, [pts], False, 0.8, 3, cv2.LINE_AA, _SHIFT)


def _bubble(canvas: np.ndarray, x: float, y: float, u: list[np.ndarray], i: int) -> None:
    """An air bubble under the coverslip: a dark rim around a clear centre."""
    radius = 40 + 200 * u[2][i]
    rim = 3 + 5 * u[3][i]
    centre = (int(x * 16), int(y * 16))
    cv2.circle(canvas, centre, int(radius * 16), 0.04, -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(canvas, centre, int(radius * 16), 0.55, int(rim), cv2.LINE_AA, _SHIFT)


def _glass_edge(seed: int, x0: int, y0: int, w: int, h: int, world_w: int,
                world_h: int) -> np.ndarray:
    """Grey density of the glass edge along one side of the slide (HxW)."""
    side = int(hash_uniform(seed, 4300, 0) * 4)
    xs = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    d = [xs, world_w - 1 - xs, ys, world_h - 1 - ys][side]
    d = np.broadcast_to(d, (h, w))
    band = max(24.0, 0.015 * (world_w if side < 2 else world_h))
    edge = 1.6 * np.exp(-np.maximum(d, 0) / (0.35 * band))
    coverslip = 0.5 * np.exp(-0.5 * ((d - 2.5 * band) / 2.0) ** 2)
    return (edge + coverslip).astype(np.float32)


def artefact_density(seed: int, x0: int, y0: int, w: int, h: int, sdf: np.ndarray,
                     world_w: int, world_h: int) -> np.ndarray:
    """Optical density (HxWx3, natural log) of the marks on window ``[x0, x0+w) x [y0, y0+h)``.

    ``sdf`` is the window's signed distance to the tissue edge (positive in tissue);
    marks are drawn only where it is below ``-CLEARANCE``. ``world_w``/``world_h`` is
    the slide's size in world px (the glass edge runs along one of its sides).
    """
    od = np.zeros((h, w, 3), np.float32)
    cx, cy = lattice_cells(x0 - REACH, y0 - REACH, x0 + w + REACH, y0 + h + REACH, SITE_CELL)
    u = _site_values(seed, cx, cy, 7)
    kind = u[0]
    sx = (cx + 0.15 + 0.7 * u[1]) * SITE_CELL - x0
    sy = (cy + 0.15 + 0.7 * hash_uniform(seed, 4199, cx, cy)) * SITE_CELL - y0
    for i in range(len(cx)):
        canvas = np.zeros((h, w), np.float32)
        if kind[i] < 0.3:
            continue
        if kind[i] < 0.5:
            ink = INKS[_pen(canvas, sx[i], sy[i], u, i)]
            # Markers lay ink unevenly: thinner along the edges of a stroke.
            od += canvas[..., None] * ink * np.float32(0.6 + 0.4 * u[4][i])
        elif kind[i] < 0.75:
            _dust(canvas, sx[i], sy[i], seed, int(cx[i] * 7919 + cy[i]))
            od += canvas[..., None] * DUST
        else:
            _bubble(canvas, sx[i], sy[i], u, i)
            od += canvas[..., None] * GREY
    od += _glass_edge(seed, x0, y0, w, h, world_w, world_h)[..., None] * GREY
    od *= (sdf < -CLEARANCE)[..., None]
    return od
