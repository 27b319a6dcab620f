"""Batch assembly: plan -> load items -> augment -> targets -> tensors.

:class:`BatchBuilder` is a map-style torch dataset indexed by training step, so a
``DataLoader`` with worker processes builds batches in parallel while the order
and content stay a pure function of (seed, step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cerberus_cli.core.vocabulary import TISSUE
from cerberus_cli.training.augment import AugmentConfig, geometric, photometric
from cerberus_cli.training.datasets import InstanceItem, TaskDataset, TissueItem
from cerberus_cli.training.targets import (
    KERNELS,
    instance_targets,
    relabel,
    type_targets,
    unet_weight_map,
)
from cerberus_cli.training.task_sampler import BatchPlan, TaskSampler


@dataclass(frozen=True)
class PatchConfig:
    """Patch sizes of the two super-tasks and target options."""

    segmentation_px: int = 448
    tissue_px: int = 144
    weight_w0: float = 10.0
    weight_sigma: float = 5.0
    foreground_types_only: bool = False


def instance_sample(item: InstanceItem, task: str, patch: PatchConfig, aug: AugmentConfig,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Augmented image and targets of one instance-task sample."""
    labels = [item.instances] + ([item.types] if item.types is not None else [])
    image, labs = geometric(item.image, labels, patch.segmentation_px, aug, rng)
    image = photometric(image, aug, rng)
    inst = relabel(labs[0])
    types = labs[1] if item.types is not None else None
    return {
        "image": image,
        "inst": instance_targets(inst, KERNELS[task]),
        "weight": unet_weight_map(inst, patch.weight_w0, patch.weight_sigma),
        "type": type_targets(inst, types, patch.foreground_types_only),
    }


def tissue_sample(item: TissueItem, patch: PatchConfig, aug: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
    image, _ = geometric(item.image, [], patch.tissue_px, aug, rng)
    return photometric(image, aug, rng)


class BatchBuilder(Dataset):
    """``builder[step]`` is the batch of training step ``step`` (a dict of arrays).

    Keys: ``images`` uint8 (B, 3, H, W); ``task`` the task of each sample (list);
    for segmentation batches ``inst`` (B, H, W) uint8 0/1/2, ``weight`` float32,
    ``type`` uint8 (IGNORE = 255); for tissue batches ``label`` (B,) int64.

    Batches are plain numpy; the DataLoader wraps them as tensors and the trainer
    converts dtypes on the device.
    """

    def __init__(self, datasets: dict[str, TaskDataset], sampler: TaskSampler,
                 patch: PatchConfig, aug: AugmentConfig, steps: int) -> None:
        self.datasets = datasets
        self.sampler = sampler
        self.patch = patch
        self.aug = aug
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def build(self, plan: BatchPlan) -> dict:
        images, out = [], {"step": plan.step, "super_task": plan.super_task,
                           "task": [s.task for s in plan.samples]}
        if plan.super_task == TISSUE:
            labels = []
            for s in plan.samples:
                item = self.datasets[TISSUE].load(s.index)
                assert isinstance(item, TissueItem), f"{TISSUE} item {s.index} is not a tissue patch"
                images.append(tissue_sample(item, self.patch, self.aug, np.random.default_rng(s.seed)))
                labels.append(item.label)
            out["label"] = np.array(labels, np.int64)
        else:
            parts: dict[str, list[np.ndarray]] = {"inst": [], "weight": [], "type": []}
            for s in plan.samples:
                seg_item = self.datasets[s.task].load(s.index)
                assert isinstance(seg_item, InstanceItem), f"{s.task} item {s.index} is not an instance item"
                sample = instance_sample(seg_item, s.task, self.patch, self.aug, np.random.default_rng(s.seed))
                images.append(sample["image"])
                for k in parts:
                    parts[k].append(sample[k])
            for k, v in parts.items():
                out[k] = np.stack(v)
        out["images"] = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
        return out

    def __getitem__(self, step: int) -> dict:
        return self.build(self.sampler.plan(step))


def _init_worker(_: int) -> None:
    # Each worker is one process doing numpy/OpenCV work: one thread each.
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def batch_loader(builder: BatchBuilder, start: int, workers: int) -> DataLoader:
    """Batches ``start .. builder.steps - 1`` in order, built by ``workers`` processes.

    Workers are spawned, not forked: the thread pools of OpenCV and OpenMP in the
    parent do not survive ``fork`` and a forked worker can wait on them forever.
    """
    return DataLoader(
        builder,
        batch_size=None,
        sampler=range(start, builder.steps),
        num_workers=workers,
        prefetch_factor=2 if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 else None,
        worker_init_fn=_init_worker if workers > 0 else None,
        # Its own generator: drawing worker seeds must not consume the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(0),
    )
