"""Batches for training on patch tasks: task-balanced draws and flip/rotate augmentation.

Every batch is a pure function of ``(seed, step)`` (a generator seeded by both), so a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np

from cerberus_cli.transfer.taskdata import SplitData


def flip_rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each (S, S, 3) patch of ``images`` flipped and rotated by a multiple of 90 degrees
    (the 8 symmetries of the square: histology has no up or left)."""
    out = np.empty_like(images)
    flips = rng.integers(0, 2, len(images))
    turns = rng.integers(0, 4, len(images))
    for i, img in enumerate(images):
        img = img[:, ::-1] if flips[i] else img
        out[i] = np.rot90(img, int(turns[i]))
    return out


def task_balanced_batch(splits: list[SplitData], batch: int, seed: int, step: int,
                        augment: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, task ids, labels) of step ``step``: each sample's task drawn uniformly,
    then a sample of that task uniformly."""
    rng = np.random.default_rng([seed, step])
    tasks = rng.integers(0, len(splits), batch)
    picks = np.array([rng.integers(0, len(splits[t])) for t in tasks], np.int64)
    images = np.stack([splits[t].images[i] for t, i in zip(tasks, picks)])
    labels = np.array([splits[t].labels[i] for t, i in zip(tasks, picks)], np.int64)
    if augment:
        images = flip_rotate(images, rng)
    return images, tasks.astype(np.int64), labels


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of one shuffled epoch over ``n`` samples (the last may be smaller;
    a last batch of one sample joins the previous one: batch norm needs two)."""
    order = np.random.default_rng([seed, epoch, 3]).permutation(n)
    parts = [order[i:i + batch] for i in range(0, n, batch)]
    if len(parts) > 1 and len(parts[-1]) < 2:
        parts[-2] = np.concatenate([parts[-2], parts.pop()])
    return parts
