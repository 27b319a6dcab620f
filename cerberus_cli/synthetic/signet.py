"""Signet ring cell phantoms: a patch task the bundled model never saw.

A signet ring cell is a cell filled by one large clear mucin vacuole that pushes its
nucleus to the edge, where it is squashed into a crescent. The task "signet ring cell
in the centre: yes/no" is written as a patch table (``signet.csv``: path, label, group,
split) beside ``images/GROUP_INDEX.png``.

Negatives are the look-alikes that make the task non-trivial: an ordinary cell (round
central nucleus) in the centre, a clear vacuole without a crescent nucleus (fat cell or
lumen), or a signet ring cell away from the centre. Patches of one group share a stain
(as patches of one slide do), and whole groups go to one split, so split-level results
measure transfer to unseen slides. Every sample is drawn from its own generator seeded
by ``(seed, index)``: the same seed always gives the same bytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.synthetic.stain import Stain, finish

#: The two classes of the task, positive first.
SIGNET_LABELS = ("signet", "other")
#: Kinds of negative sample, drawn uniformly.
NEGATIVE_KINDS = ("ordinary", "vacuole", "offcentre")
#: Patches per group (one stain, like one slide).
GROUP_SIZE = 8
#: Fractions of groups in train, val, test.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
TABLE_NAME = "signet.csv"

#: ``progress(done, total)``: called after every patch; the library never prints.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SignetSample:
    """One rendered patch and its label."""

    image: np.ndarray
    label: str
    kind: str


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)


def _soft(mask: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """Anti-aliased edges: real boundaries are never one-pixel steps."""
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stroma-like eosin with low-frequency texture and a few scattered small nuclei."""
    coarse = rng.normal(0, 1, (max(2, size // 8), max(2, size // 8))).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    eos = np.clip(rng.uniform(0.35, 0.6) + 0.12 * texture, 0.05, None).astype(np.float32)
    hem = np.full((size, size), rng.uniform(0.02, 0.08), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        # Small lymphocyte/fibroblast nuclei near the border, away from the centre cell.
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.38, 0.5) * size
        cx, cy = size / 2 + dist * np.cos(angle), size / 2 + dist * np.sin(angle)
        hem += rng.uniform(0.7, 1.1) * _soft(_disc(size, size, cx, cy, rng.uniform(2.5, 4.5)))
    return hem, eos


def _signet_cell(hem: np.ndarray, eos: np.ndarray, rng: np.random.Generator,
                 cx: float, cy: float, radius: float, crescent: bool = True) -> None:
    """Paint a cell whose clear vacuole fills it; with ``crescent`` its nucleus is pushed
    to the rim and squashed by the vacuole."""
    h, w = hem.shape
    cell = _disc(h, w, cx, cy, radius)
    vac_r = radius * rng.uniform(0.72, 0.85)
    shift = radius - vac_r
    angle = rng.uniform(0, 2 * np.pi)
    # The vacuole sits off-centre, opposite the nucleus it displaces.
    vx, vy = cx - 0.6 * shift * np.cos(angle), cy - 0.6 * shift * np.sin(angle)
    vacuole = _disc(h, w, vx, vy, vac_r) * cell
    rim = _soft(cell - vacuole)
    vac = _soft(vacuole)
    eos *= 1 - _soft(cell)
    eos += rim * rng.uniform(0.6, 0.9) + vac * rng.uniform(0.02, 0.06)
    hem *= 1 - _soft(cell)
    hem += vac * rng.uniform(0.04, 0.12)  # faint bluish mucin
    if crescent:
        nr = radius * rng.uniform(0.42, 0.55)
        nx = cx + (radius - 0.55 * nr) * np.cos(angle)
        ny = cy + (radius - 0.55 * nr) * np.sin(angle)
        nucleus = _disc(h, w, nx, ny, nr) * cell * (1 - vacuole)
        hem += _soft(nucleus) * rng.uniform(1.1, 1.5)


def _ordinary_cell(hem: np.ndarray, eos: np.ndarray, rng: np.random.Generator,
                   cx: float, cy: float, radius: float) -> None:
    """Paint an ordinary cell: pink cytoplasm with a round central nucleus."""
    h, w = hem.shape
    cell = _soft(_disc(h, w, cx, cy, radius))
    nr = radius * rng.uniform(0.35, 0.5)
    ox, oy = rng.normal(0, 0.1 * radius, 2)
    nucleus = _soft(_disc(h, w, cx + ox, cy + oy, nr))
    eos *= 1 - cell
    eos += cell * rng.uniform(0.7, 1.0)
    hem += nucleus * rng.uniform(0.9, 1.3)


def render_signet_patch(seed: int, index: int, size: int = 64, stain: Stain | None = None,
                        label: str | None = None) -> SignetSample:
    """Render patch ``index`` of the dataset with ``seed``.

    Args:
        seed: dataset seed.
        index: patch number; with ``seed`` it fixes everything drawn.
        size: side in px at 0.5 um/px.
        stain: the group's stain (default: one drawn from the sample's generator).
        label: force ``signet`` or ``other`` (default: even indices are positive).
    """
    rng = np.random.default_rng([seed, index, 7])
    stain = stain or Stain.draw(rng)
    label = label or SIGNET_LABELS[index % 2]
    hem, eos = _background(rng, size)
    radius = rng.uniform(0.17, 0.26) * size
    jitter = rng.uniform(-0.04, 0.04, 2) * size
    cx, cy = size / 2 + jitter[0], size / 2 + jitter[1]
    if label == "signet":
        kind = "signet"
        _signet_cell(hem, eos, rng, cx, cy, radius)
    else:
        kind = NEGATIVE_KINDS[int(rng.integers(len(NEGATIVE_KINDS)))]
        if kind == "ordinary":
            _ordinary_cell(hem, eos, rng, cx, cy, radius)
        elif kind == "vacuole":
            _signet_cell(hem, eos, rng, cx, cy, radius, crescent=False)
        else:
            # Centre holds an ordinary cell; a signet ring cell sits clearly off-centre.
            _ordinary_cell(hem, eos, rng, cx, cy, radius * 0.8)
            angle = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0.45, 0.55) * size
            _signet_cell(hem, eos, rng, size / 2 + d * np.cos(angle), size / 2 + d * np.sin(angle),
                         radius)
    noise = rng.normal(0, 3.0, (size, size, 3)).astype(np.float32)
    rgb = finish(stain.to_rgb(hem, eos), float(rng.uniform(0.4, 0.8)), noise)
    return SignetSample(rgb, label, kind)


def group_splits(n_groups: int, seed: int) -> list[str]:
    """Split of each group: a seeded permutation cut at :data:`SPLIT_FRACTIONS`, with at
    least one group in each split when there are three or more groups."""
    order = np.random.default_rng([seed, 11]).permutation(n_groups)
    n_train = max(1, round(SPLIT_FRACTIONS[0] * n_groups))
    n_val = max(1 if n_groups >= 3 else 0, round(SPLIT_FRACTIONS[1] * n_groups))
    n_train = min(n_train, max(1, n_groups - n_val - (1 if n_groups >= 3 else 0)))
    out = ["test"] * n_groups
    for rank, g in enumerate(order):
        if rank < n_train:
            out[g] = "train"
        elif rank < n_train + n_val:
            out[g] = "val"
    return out


def write_signet_dataset(out_dir: str | os.PathLike, count: int, seed: int = 0, size: int = 64,
                         overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Write ``count`` signet-ring patches and their patch table; return the table's path.

    The folder appears complete or not at all (written under a temporary name).
    """
    out = Path(out_dir)
    target = AtomicPath(out, overwrite=overwrite)
    try:
        (target.tmp / "images").mkdir(parents=True)
        n_groups = (count + GROUP_SIZE - 1) // GROUP_SIZE
        splits = group_splits(n_groups, seed)
        stains = [Stain.draw(np.random.default_rng([seed, g, 13])) for g in range(n_groups)]
        rows = []
        for i in range(count):
            g = i // GROUP_SIZE
            sample = render_signet_patch(seed, i, size, stains[g])
            name = f"images/g{g:04d}_{i:06d}.png"
            if not cv2.imwrite(str(target.tmp / name), sample.image[..., ::-1]):
                raise OSError(f"{out / name}: cannot be written")
            rows.append({"path": name, "label": sample.label, "group": f"g{g:04d}",
                         "split": splits[g], "kind": sample.kind})
            if progress is not None:
                progress(i + 1, count)
        write_table(target.tmp / TABLE_NAME, rows, ["path", "label", "group", "split", "kind"])
        target.commit()
    except BaseException:
        target.abort()
        raise
    return out / TABLE_NAME


def write_table(path: Path, rows: Sequence[Mapping[str, str]], columns: list[str]) -> None:
    """Write a patch table (CSV with ``columns``) of phantom patches."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
