"""Deterministic random numbers addressed by position.

Everything the phantom generator draws is a pure function of the seed and of
global integer coordinates (a lattice cell, a noise tile). A whole slide can then
be rendered block by block, in any order, and every block agrees with its
neighbours: an object near a border is drawn identically from both sides.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_u64(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Hash ``(seed, stream, *keys)`` elementwise to uint64 (keys broadcast)."""
    arrays = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in keys])
    shape = arrays[0].shape if arrays else ()
    with np.errstate(over="ignore"):
        h = _mix(np.full(shape, (seed * 1_000_003 + stream) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
        for a in arrays:
            h = _mix(h ^ a.astype(np.uint64))
    return h


def hash_uniform(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) hashed from ``(seed, stream, *keys)``."""
    return (hash_u64(seed, stream, *keys) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


NOISE_TILE = 256


def white_noise(seed: int, stream: int, x0: int, y0: int, h: int, w: int) -> np.ndarray:
    """Zero-mean, unit-variance float32 noise for the global window ``[y0:y0+h, x0:x0+w]``.

    Drawn per global 256 px tile from a generator keyed by the tile position, so
    overlapping windows see the same values. Uniform rather than normal (five times
    faster to draw); every use smooths it, which makes it Gaussian anyway.
    """
    t = NOISE_TILE
    tx0, ty0 = x0 // t, y0 // t
    tx1, ty1 = (x0 + w - 1) // t, (y0 + h - 1) // t
    out = np.empty(((ty1 - ty0 + 1) * t, (tx1 - tx0 + 1) * t), dtype=np.float32)
    for ty in range(ty0, ty1 + 1):
        for tx in range(tx0, tx1 + 1):
            rng = np.random.default_rng([seed & 0xFFFFFFFF, stream, tx & 0xFFFFFFFF, ty & 0xFFFFFFFF, 7])
            out[(ty - ty0) * t:(ty - ty0 + 1) * t, (tx - tx0) * t:(tx - tx0 + 1) * t] = \
                rng.random((t, t), dtype=np.float32)
    oy, ox = y0 - ty0 * t, x0 - tx0 * t
    out = out[oy:oy + h, ox:ox + w]
    out -= np.float32(0.5)
    out *= np.float32(np.sqrt(12.0))
    return out


def value_noise_grid(seed: int, stream: int, xs: np.ndarray, ys: np.ndarray, scale: float,
                     octaves: int = 3, persistence: float = 0.5) -> np.ndarray:
    """Smooth fractal value noise in about [-1, 1] on the grid ``xs`` x ``ys`` (len(ys) x len(xs)).

    ``scale`` is the lattice spacing of the first octave in pixels; each further octave
    halves it. Lattice values are hashed, so the field is defined everywhere; only the
    lattice nodes the grid spans are hashed, and the interpolation (smoothstep) is
    separable: rows, then columns.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    total = np.zeros((len(ys), len(xs)))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        s = scale / (2 ** o)
        ix, fx = _cell_and_weight(xs / s)
        iy, fy = _cell_and_weight(ys / s)
        nodes_x = np.arange(ix.min(), ix.max() + 2)
        nodes_y = np.arange(iy.min(), iy.max() + 2)
        lattice = hash_uniform(seed, stream * 64 + o, nodes_x[None, :], nodes_y[:, None])
        rows = lattice[iy - nodes_y[0]] * (1 - fy)[:, None] + lattice[iy - nodes_y[0] + 1] * fy[:, None]
        v = rows[:, ix - nodes_x[0]] * (1 - fx) + rows[:, ix - nodes_x[0] + 1] * fx
        total += amp * (2 * v - 1)
        norm += amp
        amp *= persistence
    return total / norm * 1.7


def _cell_and_weight(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell and smoothstep weight of positions ``g`` (in lattice units)."""
    i = np.floor(g).astype(np.int64)
    f = g - i
    return i, f * f * (3 - 2 * f)
