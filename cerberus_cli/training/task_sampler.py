"""The task sampler: which super-task, tasks and items make up each batch.

Tasks are grouped into super-tasks by input size (segmentation patches for the
instance tasks, smaller patches for tissue type); each batch belongs to one
super-task, chosen with ``tissue_prob``. In ``mixed`` batches every sample draws its
own task (p = 1/T unless ``task_probs`` says otherwise); in ``fixed`` batches one
task serves the whole batch. Within a task every item is equally likely, unless its
sources are weighted (``item_probs``, from :func:`source_item_probs`).

A plan is a pure function of (seed, step): no sampler state needs saving, resuming
at step ``s`` replays exactly what an uninterrupted run would have drawn, and worker
processes can build any batch independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TISSUE

SamplerMode = Literal["mixed", "fixed"]
SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class SampleSpec:
    """One sample of a batch: its task, item index in that task's dataset, and seed."""

    task: str
    index: int
    seed: int


@dataclass(frozen=True)
class BatchPlan:
    step: int
    super_task: str
    samples: tuple[SampleSpec, ...]

    @property
    def tasks(self) -> list[str]:
        """Distinct tasks in the batch, in first-seen order."""
        return list(dict.fromkeys(s.task for s in self.samples))


@dataclass(frozen=True)
class SamplerConfig:
    sizes: dict[str, int]
    batch_size: int = 8
    #: Samples per tissue batch (None: ``batch_size``); tissue patches are smaller, and
    #: the tissue head's batch norm wants more than a handful of samples.
    tissue_batch_size: int | None = None
    mode: SamplerMode = "mixed"
    tissue_prob: float = 0.3
    task_probs: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    #: Per task, the probability of each item (weighted sources); absent: uniform.
    item_probs: dict[str, tuple[float, ...]] = field(default_factory=dict)


def source_item_probs(sizes: list[int], weights: list[float | None]) -> tuple[float, ...] | None:
    """Item probabilities of a task whose sources have ``sizes`` items and ``weights``.

    ``None`` (every item equally likely) when no source is weighted; otherwise each
    source gets ``weight / sum of weights`` of the samples (1 for an unweighted one),
    spread evenly over its items.
    """
    if all(w is None for w in weights):
        return None
    ws = [1.0 if w is None else float(w) for w in weights]
    total = sum(w for w, n in zip(ws, sizes, strict=True) if n > 0)
    return tuple(w / total / n for w, n in zip(ws, sizes, strict=True) for _ in range(n))


class TaskSampler:
    """Draws :class:`BatchPlan` s for the tasks that have data (``cfg.sizes``)."""

    def __init__(self, cfg: SamplerConfig) -> None:
        if cfg.mode not in ("mixed", "fixed"):
            raise InputError(f"sampler mode must be 'mixed' or 'fixed', got {cfg.mode!r}")
        if cfg.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {cfg.batch_size}")
        if cfg.tissue_batch_size is not None and cfg.tissue_batch_size < 1:
            raise InputError(f"tissue batch size must be at least 1, got {cfg.tissue_batch_size}")
        self.cfg = cfg
        self.seg_tasks = sorted(t for t, n in cfg.sizes.items() if t != TISSUE and n > 0)
        self.has_tissue = cfg.sizes.get(TISSUE, 0) > 0
        if not self.seg_tasks and not self.has_tissue:
            raise InputError("no training data: give at least one --data TASK=PATH")
        unknown = set(cfg.task_probs) - set(self.seg_tasks)
        if unknown:
            raise InputError(f"--task-probs names tasks without training data: {', '.join(sorted(unknown))}")
        probs = np.array([cfg.task_probs.get(t, 1.0 if not cfg.task_probs else 0.0) for t in self.seg_tasks])
        if self.seg_tasks and ((probs < 0).any() or probs.sum() <= 0):
            raise InputError(f"--task-probs must be non-negative with a positive sum, got {cfg.task_probs}")
        self.probs = probs / probs.sum() if self.seg_tasks else probs
        if not 0.0 <= cfg.tissue_prob <= 1.0:
            raise InputError(f"tissue probability must be in [0, 1], got {cfg.tissue_prob}")

    def super_task_prob(self) -> float:
        """Probability that a batch is a tissue batch, given the data available."""
        if not self.has_tissue:
            return 0.0
        return 1.0 if not self.seg_tasks else self.cfg.tissue_prob

    def batch_size(self, super_task: str) -> int:
        """Samples per batch of ``super_task``."""
        if super_task == TISSUE and self.cfg.tissue_batch_size is not None:
            return self.cfg.tissue_batch_size
        return self.cfg.batch_size

    def plan(self, step: int) -> BatchPlan:
        rng = np.random.default_rng([self.cfg.seed, step])
        b = self.cfg.batch_size
        if rng.random() < self.super_task_prob():
            tasks = [TISSUE] * self.batch_size(TISSUE)
            super_task = TISSUE
        else:
            super_task = SEGMENTATION
            if self.cfg.mode == "fixed":
                tasks = [self.seg_tasks[rng.choice(len(self.seg_tasks), p=self.probs)]] * b
            else:
                tasks = [self.seg_tasks[i] for i in rng.choice(len(self.seg_tasks), size=b, p=self.probs)]
        samples = tuple(SampleSpec(t, self._item(t, rng), int(rng.integers(2**62))) for t in tasks)
        return BatchPlan(step, super_task, samples)

    def _item(self, task: str, rng: np.random.Generator) -> int:
        probs = self.cfg.item_probs.get(task)
        if probs is None:
            return int(rng.integers(self.cfg.sizes[task]))
        return int(rng.choice(len(probs), p=probs))
