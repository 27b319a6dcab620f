"""``finetune()``: a new classifier head on a transferred encoder, chosen on validation.

For each seed and each learning rate of the grid a fresh head (and, in ``full`` mode, a
fresh copy of the encoder, optionally batch-norm-adapted to the training patches) is
trained for ``epochs`` epochs; after each epoch it is scored on the ``val`` split
(balanced accuracy, ties broken by lower val loss). Each seed keeps its best (LR, epoch);
only that model ever sees the ``test`` split. Test metrics are averaged over seeds with
percentile intervals from a bootstrap over test groups.

Every head opens with a standardising layer fitted on the training patches' pooled
features (of the encoder as training starts, after any BN adaptation). In ``full`` mode
batch-norm layers keep their running statistics while the encoder trains unless
``bn_train`` is set: batch statistics of small batches drift from the evaluation ones.

In ``full`` mode the first ``warmup_epochs`` train only the head on the frozen encoder
(every epoch, warm-up included, is a candidate for the val choice), then the encoder
trains at ``encoder_lr_mult`` times the head's learning rate. Without the warm-up a random
head's gradients, scaled up by the standardising layer, rewrite the encoder in the first
steps (the bundled encoder fell below chance on the signet phantom task while its frozen
features gave 0.99). The loss is weighted by inverse class frequency
(``balanced_loss``) so an imbalanced task does not settle on its majority class.

In ``frozen`` mode the encoder is in eval mode throughout, so its pooled features are
computed once per split (no augmentation) and only the head trains on them.

Outputs (a folder, written under a temporary name and renamed when complete):
``report.json``, ``epochs.csv`` (seed, lr, epoch, train loss, val loss and metrics) and
``model.pt``: seed 0's chosen network as an encoder-only Cerberus checkpoint (readable by
``features``/``probe``/``train --init``) with the head under ``classifier`` (kind, classes,
task, patch side, input normalisation, weights), which ``segment`` applies over slides as
a class map (:mod:`cerberus_cli.model.classifier`).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError
from cerberus_cli.model.bn_adapt import adapt_batchnorm
from cerberus_cli.model.classifier import CLASSIFIER_KEY
from cerberus_cli.model.device import resolve_device
from cerberus_cli.training.run_checkpoints import model_payload
from cerberus_cli.transfer.encoder import Encoder
from cerberus_cli.transfer.finetune_heads import FinetuneNet, fit_standardisation
from cerberus_cli.transfer.metrics import METRICS, group_bootstrap
from cerberus_cli.transfer.metrics import metrics as score
from cerberus_cli.transfer.patches import PatchReader
from cerberus_cli.transfer.pretrain import checked_encoder, encoder_model
from cerberus_cli.transfer.sampling import epoch_batches, flip_rotate
from cerberus_cli.transfer.taskdata import TASK_NAME, SplitData, TaskData, load_task, task_tables
from cerberus_cli.transfer.tuning_options import FinetuneOptions

#: ``progress(done, total, row)``: after every epoch of every (seed, lr); never prints.
Progress = Callable[[int, int, dict[str, Any]], None]


def _tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


@torch.no_grad()
def _features(net: FinetuneNet, split: SplitData, batch: int, device: torch.device) -> torch.Tensor:
    net.encoder.eval()
    return torch.cat([net.pooled(_tensor(split.images[i:i + batch], device))
                      for i in range(0, len(split), batch)])


@torch.no_grad()
def _logits(net: FinetuneNet, split: SplitData, batch: int, device: torch.device,
            feats: torch.Tensor | None) -> torch.Tensor:
    net.eval()
    if feats is not None:
        return net.head(feats).float().cpu()
    return torch.cat([net(_tensor(split.images[i:i + batch], device))
                      for i in range(0, len(split), batch)]).float().cpu()


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``module`` in eval mode (running statistics used and
    kept; affine parameters still train)."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse class frequencies, scaled to a mean of 1 over the classes present (an
    absent class weighs 0): every class contributes equally to the weighted loss."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.divide(1.0, counts, out=np.zeros(k), where=counts > 0)
    return torch.from_numpy(w * (counts > 0).sum() / w.sum()).float()


def make_optimizer(net: FinetuneNet, options: FinetuneOptions, lr: float) -> torch.optim.SGD:
    """SGD over the head at ``lr`` and, in full mode, the encoder at ``lr`` x
    ``options.encoder_lr_mult``."""
    groups: list[dict[str, Any]] = [{"params": list(net.head.parameters()), "lr": lr}]
    if options.mode == "full":
        groups.append({"params": list(net.encoder.parameters()), "lr": lr * options.encoder_lr_mult})
    return torch.optim.SGD(groups, lr=lr, momentum=options.momentum, weight_decay=options.weight_decay)


def _train_one(encoder: Encoder, task: TaskData, options: FinetuneOptions, seed: int, lr: float,
               device: torch.device, frozen_feats: dict[str, torch.Tensor] | None,
               on_epoch: Callable[[dict[str, Any]], None],
               clock: list[float] | None = None) -> tuple[FinetuneNet, float, float, int]:
    """Train one (seed, lr); return the network at its best val epoch, that epoch's val
    score and loss, and the epoch. ``clock`` ([seconds, samples]) accumulates the time
    spent in training batches and the samples they held."""
    torch.manual_seed(seed)
    net = FinetuneNet(copy.deepcopy(encoder.trunk), options.head, len(task.classes),
                      encoder.normalisation).to(device)
    train, val = task.train, task.splits["val"]
    batch = options.batch_size
    if options.bn_adapt and options.mode == "full":
        parts = epoch_batches(len(train), batch, seed, 0)[:options.bn_adapt]  # epochs count from 1
        adapt_batchnorm(net.encoder, lambda x: net.pooled(x), (_tensor(train.images[p], device) for p in parts))
    # The head standardises its input with statistics of the (adapted) encoder's training
    # features: without it SGD underfits the uneven scales of pooled features.
    start_feats = frozen_feats["train"] if frozen_feats is not None else _features(net, train, batch, device)
    fit_standardisation(net.head, start_feats)
    frozen = options.mode == "frozen"
    params = list(net.head.parameters()) if frozen else list(net.parameters())
    optimizer = make_optimizer(net, options, lr)
    y_train = torch.from_numpy(train.labels).to(device)
    weight = class_weights(train.labels, len(task.classes)).to(device) if options.balanced_loss else None
    best: tuple[float, float] = (-math.inf, math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch = 0
    start_val: torch.Tensor | None = None
    for epoch in range(1, options.epochs + 1):
        warm = frozen or epoch <= options.warmup_epochs
        net.train()
        net.encoder.train(not warm)
        if not warm and not options.bn_train:
            freeze_batchnorm(net.encoder)
        for p in net.encoder.parameters():
            p.requires_grad_(not warm)
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        for idx in epoch_batches(len(train), batch, seed, epoch):
            if frozen_feats is not None:
                logits = net.head(frozen_feats["train"][idx])
            elif warm and not options.augment:  # the frozen encoder's features, computed above
                logits = net.head(start_feats[idx])
            else:
                images = train.images[idx]
                if options.augment:
                    images = flip_rotate(images, np.random.default_rng([seed, epoch, int(idx[0]), 5]))
                x = _tensor(images, device)
                if warm:
                    with torch.no_grad():
                        pooled = net.pooled(x)
                    logits = net.head(pooled)
                else:
                    logits = net(x)
            loss = F.cross_entropy(logits, y_train[idx], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The standardising layer scales gradients into the encoder by 1/std (std of
            # pooled features is often ~0.05): bound each step so full mode cannot diverge.
            torch.nn.utils.clip_grad_norm_(params, options.clip_grad)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if clock is not None:
            clock[0] += time.perf_counter() - t0
            clock[1] += seen
        if frozen_feats is not None:
            val_feats: torch.Tensor | None = frozen_feats["val"]
        elif warm:  # the encoder has not moved yet: its val features once, for every warm-up epoch
            if start_val is None:
                start_val = _features(net, val, batch, device)
            val_feats = start_val
        else:
            val_feats = None
        logits = _logits(net, val, batch, device, val_feats)
        val_loss = float(F.cross_entropy(logits, torch.from_numpy(val.labels),
                                         weight=None if weight is None else weight.cpu()))
        m = score(val.labels, logits.argmax(1).numpy(), logits.numpy())
        row = {"seed": seed, "lr": lr, "epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
               **{f"val_{k}": v for k, v in m.items()}}
        on_epoch(row)
        key = (m["balanced_accuracy"], -val_loss)
        if key > (best[0], -best[1]):
            best = (m["balanced_accuracy"], val_loss)
            best_state = copy.deepcopy(net.state_dict())
            best_epoch = epoch
    net.load_state_dict(best_state)
    net.eval()
    return net, best[0], best[1], best_epoch


def load_finetune_task(table: str, options: FinetuneOptions, encoder: Encoder) -> TaskData:
    """The one task of ``table``, checked, with its patches read at the encoder's mpp."""
    stem = Path(table).stem
    name = stem if TASK_NAME.match(stem) else "task"  # the class map's name in segment
    tables = task_tables([(None, table)] if _has_task_column(table) else [(name, table)],
                         options.group_regex, options.allow_group_overlap)
    if len(tables) != 1:
        raise InputError(f"{table}: holds {len(tables)} tasks ({', '.join(tables)}); fine-tune one at a time")
    name, (rows, source) = next(iter(tables.items()))
    reader = PatchReader(encoder.mpp, options.patch_px, options.image_mpp)
    task = load_task(name, rows, source, reader, options.patch_px)
    if "val" not in task.splits:
        raise InputError(f"{table}: no 'val' rows; fine-tuning chooses its epoch and learning "
                         "rate on the val split (never on test)")
    return task


def _has_task_column(table: str) -> bool:
    from cerberus_cli.transfer.table import read_patch_table

    path = Path(table)
    return path.is_file() and "task" in read_patch_table(path, allow_group_overlap=True).columns


def finetune(table: str, out_dir: str | os.PathLike, options: FinetuneOptions,
             progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune a new head on the encoder of ``options.model``; write and return the report."""
    out = Path(out_dir)
    target = AtomicPath(out, overwrite=options.overwrite)
    encoder = checked_encoder(options.model, random_seed=options.random_init)
    task = load_finetune_task(table, options, encoder)
    device = resolve_device(options.device)
    encoder.trunk = encoder.trunk.to(device)
    frozen_feats = None
    if options.mode == "frozen":
        probe = FinetuneNet(encoder.trunk, options.head, len(task.classes), encoder.normalisation).to(device)
        frozen_feats = {k: _features(probe, s, options.batch_size, device) for k, s in task.splits.items()}
    rows: list[dict[str, Any]] = []
    total = options.seeds * len(options.lr_grid) * options.epochs

    def on_epoch(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress(len(rows), total, row)

    chosen = []
    clock = [0.0, 0.0]
    preds, scores = [], []
    model0: FinetuneNet | None = None
    for seed in range(options.seeds):
        best: tuple[float, float, float, int, FinetuneNet] | None = None
        for lr in options.lr_grid:
            net, val_score, val_loss, epoch = _train_one(encoder, task, options, seed, lr, device,
                                                         frozen_feats, on_epoch, clock)
            if best is None or (val_score, -val_loss) > (best[0], -best[1]):
                best = (val_score, val_loss, lr, epoch, net)
        assert best is not None
        chosen.append({"seed": seed, "lr": best[2], "epoch": best[3], "val_balanced_accuracy": best[0],
                       "val_loss": best[1]})
        if seed == 0:
            model0 = best[4]
        if "test" in task.splits:
            feats = frozen_feats["test"] if frozen_feats is not None else None
            logits = _logits(best[4], task.splits["test"], options.batch_size, device, feats)
            preds.append(logits.argmax(1).numpy())
            scores.append(torch.softmax(logits, 1).numpy())
    report: dict[str, Any] = {
        "task": task.name, "classes": task.classes, "encoder": encoder.name, "encoder_sha256": encoder.sha256,
        "head": options.head, "mode": options.mode, "bn_adapt": options.bn_adapt, "chosen": chosen,
        "n_train": len(task.train), "n_val": len(task.splits["val"]),
        "n_test": len(task.splits["test"]) if "test" in task.splits else 0,
        "train_samples_per_s": clock[1] / clock[0] if clock[0] else None,
        "options": {k: v for k, v in asdict(options).items()},
        "protocol": "epoch and learning rate chosen per seed on val (balanced accuracy, then val "
                    "loss); test scored once per seed; intervals: bootstrap over test groups",
    }
    if preds:
        test = task.splits["test"]
        per_seed = [score(test.labels, p, s) for p, s in zip(preds, scores)]
        for m in METRICS:
            values = [d[m] for d in per_seed if not math.isnan(d[m])]
            report[m] = float(np.mean(values)) if values else None
        cis = group_bootstrap(test.labels, preds, scores, test.groups, options.bootstrap, options.confidence)
        for m in METRICS:
            if m in cis:
                report[f"{m}_ci"] = list(cis[m])  # type: ignore[arg-type]
        report["per_seed"] = per_seed
    assert model0 is not None
    try:
        target.tmp.mkdir()
        (target.tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        with open(target.tmp / "epochs.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        model = encoder_model(model0.encoder.cpu(), encoder.arch, encoder.stem_stride, encoder.mpp,
                              f"finetune-{task.name}")
        payload = model_payload(model, {"finetune": {k: report[k] for k in ("task", "encoder", "head", "mode")}})
        payload[CLASSIFIER_KEY] = {"kind": options.head, "classes": task.classes, "task": task.name,
                                 "patch_px": options.patch_px, "normalisation": encoder.normalisation,
                                 "state_dict": {k: v.detach().cpu() for k, v in model0.head.state_dict().items()}}
        torch.save(payload, target.tmp / "model.pt")
        target.commit()
    except BaseException:
        target.abort()
        raise
    report["out"] = str(out)
    return report
