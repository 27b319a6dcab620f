"""Validation and evaluation on held-out data.

Per instance task: Dice of the predicted foreground (inner + boundary) and PQ
(mean over images) of the instances post-processed from the inner/boundary maps
exactly as ``cerberus segment`` does (lumina kept inside predicted glands); per type head: object
type accuracy (each ground-truth object gets the majority vote of the predicted
per-pixel types inside it, no-label ignored when another label is present); tissue:
patch accuracy. :func:`evaluate_phantom` runs all of it on a ``cerberus synth tiles``
folder, which is where the bundled model's card numbers come from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cerberus_cli.core.vocabulary import INSTANCE_TASKS, TISSUE
from cerberus_cli.metrics.dice import dice
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.postprocess.types import vote_types
from cerberus_cli.training.datasets import (
    IGNORE,
    InstanceItem,
    TaskDataset,
    TissueItem,
)
from cerberus_cli.training.type_codes import set_members

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_maps(model: CerberusNet, image: np.ndarray, heads: list[str],
                 device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Softmax maps (C, H, W) of ``heads`` for one whole RGB image.

    The image is reflect-padded to a multiple of the encoder stride so every
    decoder level lines up, and the maps are cropped back.
    """
    stride = model.config.total_stride
    h, w = image.shape[:2]
    ph, pw = -h % stride, -w % stride
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    out = model(x, heads=heads, tissue=None)
    return {k: v[0, :, :h, :w].float().softmax(0).cpu().numpy() for k, v in out.items()}


def instances_from_maps(task: str, probs: np.ndarray, gland_probs: np.ndarray | None = None,
                        options: PostprocessOptions | None = None) -> np.ndarray:
    """Instance map from an instance head's (3, H, W) probabilities, by the same
    post-processing ``cerberus segment`` uses (``options``: its defaults). Lumina are
    kept inside the glands post-processed from ``gland_probs`` (anywhere when not given)."""
    from cerberus_cli.postprocess import instances as post

    options = PostprocessOptions() if options is None else options
    if task == "nuclei":
        return post.nuclei_instances(probs[1], probs[2], options)
    if task == "gland":
        return post.gland_instances(probs[1], probs[2], options)
    glands = (post.gland_instances(gland_probs[1], gland_probs[2], options) if gland_probs is not None
              else np.ones(probs.shape[1:], np.int32))
    return post.lumen_instances(probs[1], probs[2], glands, options)


def panoptic_quality(true: np.ndarray, pred: np.ndarray) -> float:
    """PQ of one image (NaN when both maps are empty)."""
    from cerberus_cli.metrics.pq import panoptic_quality as pq

    return float(pq(true, pred).pq)


def object_type_votes(instances: np.ndarray, type_probs: np.ndarray) -> dict[int, int]:
    """Object id -> majority predicted type over its pixels (0 only if nothing else)."""
    n = int(instances.max()) if instances.size else 0
    classes, _ = vote_types(instances, type_probs.argmax(0), type_probs.shape[0], n)
    return {int(i): int(classes[i - 1]) for i in np.unique(instances[instances > 0])}


def true_object_types(instances: np.ndarray, types: np.ndarray) -> dict[int, int]:
    """Object id -> its ground-truth class or class set (majority over its pixels), IGNORE/0 skipped."""
    labelled = np.where(types == IGNORE, 0, types)
    n = int(instances.max()) if instances.size else 0
    n_classes = max(int(labelled.max()) + 1 if labelled.size else 0, 2)
    classes, _ = vote_types(instances, labelled, n_classes, n)
    ids = np.unique(instances[instances > 0])
    return {int(i): int(classes[i - 1]) for i in ids if classes[i - 1] != 0}


def _indices(n: int, limit: int | None) -> list[int]:
    """All items, or ``limit`` of them spread evenly (class folders are sorted by class)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit)})


def evaluate_instance_task(model: CerberusNet, ds: TaskDataset, device: torch.device | str = "cpu",
                           limit: int | None = None) -> dict[str, float]:
    """Dice, PQ and (with a type head) object type accuracy on ``ds``."""
    task = ds.task
    type_head = model.config.type_head_for(task)
    heads = [task] + ([type_head.name] if type_head is not None else [])
    if task == "lumen" and "gland" in model.seg_heads:
        heads.append("gland")  # lumina are kept inside predicted glands, as in inference
    options = PostprocessOptions().for_model(model.config.postprocess)  # as segment runs it
    dices, pqs, correct, total = [], [], 0, 0
    for i in _indices(len(ds), limit):
        item: InstanceItem = ds.load(i)  # type: ignore[assignment]
        maps = predict_maps(model, item.image, heads, device)
        probs = maps[task]
        dices.append(dice(probs[1:].sum(0) > 0.5, item.instances > 0))
        pq = panoptic_quality(item.instances,
                              instances_from_maps(task, probs, maps.get("gland"), options))
        if not np.isnan(pq):
            pqs.append(pq)
        if type_head is not None and item.types is not None:
            truth = true_object_types(item.instances, item.types)
            votes = object_type_votes(item.instances, maps[type_head.name])
            # A coarse label (a class set) is met by any of its members.
            correct += sum(votes.get(k) in set_members(v) for k, v in truth.items())
            total += len(truth)
    # Both masks empty is undefined (NaN), as in `cerberus evaluate`: left out of the mean.
    valid = [d for d in dices if not np.isnan(d)]
    out = {f"{task}_dice": float(np.mean(valid)) if valid else float("nan")}
    if pqs:
        out[f"{task}_pq"] = float(np.mean(pqs))
    if type_head is not None and total:
        out[f"{type_head.name}_acc"] = correct / total
    return out


@torch.no_grad()
def evaluate_tissue(model: CerberusNet, ds: TaskDataset, device: torch.device | str = "cpu",
                    limit: int | None = None, batch_size: int = 32) -> dict[str, float]:
    """Patch accuracy of the tissue head on the centre ``tissue_patch_px`` of each patch."""
    size = model.config.tissue_patch_px
    order = _indices(len(ds), limit)
    n = len(order)
    correct = 0
    for start in range(0, n, batch_size):
        images, labels = [], []
        for i in order[start:start + batch_size]:
            item = ds.load(i)
            assert isinstance(item, TissueItem), f"{ds.path}: item {i} is not a tissue patch"
            img = item.image
            h, w = img.shape[:2]
            if h >= size and w >= size:
                y, x = (h - size) // 2, (w - size) // 2
                img = img[y:y + size, x:x + size]
            images.append(np.ascontiguousarray(img))
            labels.append(item.label)
        shapes = {im.shape for im in images}
        batches = [np.stack(images)] if len(shapes) == 1 else [im[None] for im in images]
        preds = []
        for b in batches:
            x = torch.from_numpy(b).permute(0, 3, 1, 2).to(device)
            preds.append(model(x, heads=[], tissue="centre")[model.tissue_name].argmax(1).cpu())
        correct += int((torch.cat(preds) == torch.tensor(labels)).sum())
    return {"tissue_acc": correct / max(n, 1)}


def validate(model: CerberusNet, datasets: dict[str, TaskDataset], device: torch.device | str = "cpu",
             limit: int | None = None) -> dict[str, float]:
    """All validation metrics of ``model`` on the held-out ``datasets`` (by task)."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        for task, ds in sorted(datasets.items()):
            if task == TISSUE:
                if model.tissue_name is not None:
                    metrics.update(evaluate_tissue(model, ds, device, limit))
            elif task in model.seg_heads:
                metrics.update(evaluate_instance_task(model, ds, device, limit))
    finally:
        model.train(was_training)
    return metrics


def score(metrics: dict[str, float]) -> float:
    """One number to pick the best checkpoint: mean of PQ (Dice where no PQ), accuracies."""
    vals = []
    for task in INSTANCE_TASKS:
        key = f"{task}_pq" if f"{task}_pq" in metrics else f"{task}_dice"
        if key in metrics:
            vals.append(metrics[key])
    vals += [v for k, v in metrics.items() if k.endswith("_acc")]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_phantom(model: CerberusNet | str | Path, root: str | Path, limit: int | None = None,
                     device: str = "cpu") -> dict[str, float]:
    """Evaluate a model (object or checkpoint/registry name) on a phantom tile folder.

    Returns Dice and PQ per instance task, nucleus- and gland-type object accuracy
    and tissue accuracy, over ``limit`` evenly spread items of each task (all by default).
    """
    from cerberus_cli.model.registry import load_model
    from cerberus_cli.training.formats.phantom import open_phantom, tasks_in

    if not isinstance(model, CerberusNet):
        model = load_model(model).model
    model = model.to(device).eval()
    root = Path(root)
    have = set(model.config.tasks)
    datasets = {t: open_phantom(root, t, model.config.mpp) for t in tasks_in(root) if t in have}
    return validate(model, datasets, device, limit)
