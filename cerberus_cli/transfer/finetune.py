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

Each (seed, lr) is one run of the shared training loop (:mod:`cerberus_cli.training.loop`),
one step per epoch, in its own run folder ``OUT.runs/seed<S>-lr<I>/`` (``I``: the rate's
place in the grid) with a checkpoint after every epoch; ``--resume`` continues an
interrupted fine-tuning from there, bit for bit, and the folder is removed once ``OUT``
is complete.

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
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import CheckpointError, InputError
from cerberus_cli.model.bn_adapt import adapt_batchnorm
from cerberus_cli.model.classifier import CLASSIFIER_KEY
from cerberus_cli.model.device import resolve_device
from cerberus_cli.training.loop import LoopTask, Schedule, TrainingLoop, Validation
from cerberus_cli.training.run_checkpoints import TrainState, load_training, model_payload, save_model, save_training
from cerberus_cli.training.rundir import RunDir
from cerberus_cli.transfer.finetune_heads import FinetuneNet, fit_standardisation
from cerberus_cli.transfer.loaded_encoder import Encoder
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


#: The columns of epochs.csv, one row per epoch of each (seed, lr).
ROW_KEYS = ("seed", "lr", "epoch", "train_loss", "val_loss", *(f"val_{m}" for m in METRICS))


def classifier_entry(net: FinetuneNet, task: TaskData, options: FinetuneOptions,
                     encoder: Encoder) -> dict[str, Any]:
    """The checkpoint entry of ``net``'s head (:data:`CLASSIFIER_KEY`), as ``segment`` reads it."""
    return {"kind": options.head, "classes": task.classes, "task": task.name, "patch_px": options.patch_px,
            "normalisation": encoder.normalisation,
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.head.state_dict().items()}}


def load_weights(net: FinetuneNet, path: Path) -> None:
    """Set ``net``'s encoder and head from a checkpoint of one fine-tuning run."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    entry = obj.get(CLASSIFIER_KEY) if isinstance(obj, dict) else None
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: not a checkpoint of a fine-tuning run (no classifier)")
    net.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in obj["state_dict"].items()
                                 if k.startswith("encoder.")})
    net.head.load_state_dict(entry["state_dict"])


class _EpochTask(LoopTask):
    """What one (seed, lr) of ``finetune`` supplies to the shared loop: a step is an epoch."""

    def __init__(self, net: FinetuneNet, encoder: Encoder, task: TaskData, options: FinetuneOptions, seed: int,
                 lr: float, device: torch.device, run: RunDir, frozen_feats: dict[str, torch.Tensor] | None,
                 start_feats: torch.Tensor, clock: list[float] | None) -> None:
        self.net, self.encoder, self.task, self.options = net, encoder, task, options
        self.seed, self.lr, self.device, self.run = seed, lr, device, run
        self.frozen_feats, self.start_feats, self.clock = frozen_feats, start_feats, clock
        self.frozen = options.mode == "frozen"
        self.params = list(net.head.parameters()) if self.frozen else list(net.parameters())
        self.optimizer = make_optimizer(net, options, lr)
        train = task.train
        self.y_train = torch.from_numpy(train.labels).to(device)
        self.weight = class_weights(train.labels, len(task.classes)).to(device) if options.balanced_loss else None
        self.start_val: torch.Tensor | None = None
        self.train_loss = math.nan
        # The checkpoints' encoder-only model, around net's encoder (shared). Building it
        # draws initial weights: the global RNG (dropout's) must not see that.
        with torch.random.fork_rng(devices=[]):
            self.model = encoder_model(net.encoder, encoder.arch, encoder.stem_stride, encoder.mpp,
                                       f"finetune-{task.name}")

    def _warm(self, epoch: int) -> bool:
        return self.frozen or epoch <= self.options.warmup_epochs

    def step(self, step: int) -> float:
        epoch, net, options, train = step + 1, self.net, self.options, self.task.train
        warm = self._warm(epoch)
        net.train()
        net.encoder.train(not warm)
        if not warm and not options.bn_train:
            freeze_batchnorm(net.encoder)
        for p in net.encoder.parameters():
            p.requires_grad_(not warm)
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        for idx in epoch_batches(len(train), options.batch_size, self.seed, epoch):
            if self.frozen_feats is not None:
                logits = net.head(self.frozen_feats["train"][idx])
            elif warm and not options.augment:  # the frozen encoder's features, computed at the start
                logits = net.head(self.start_feats[idx])
            else:
                images = train.images[idx]
                if options.augment:
                    images = flip_rotate(images, np.random.default_rng([self.seed, epoch, int(idx[0]), 5]))
                x = _tensor(images, self.device)
                if warm:
                    with torch.no_grad():
                        pooled = net.pooled(x)
                    logits = net.head(pooled)
                else:
                    logits = net(x)
            loss = F.cross_entropy(logits, self.y_train[idx], weight=self.weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The standardising layer scales gradients into the encoder by 1/std (std of
            # pooled features is often ~0.05): bound each step so full mode cannot diverge.
            torch.nn.utils.clip_grad_norm_(self.params, options.clip_grad)
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if self.clock is not None:
            self.clock[0] += time.perf_counter() - t0
            self.clock[1] += seen
        self.train_loss = total / seen
        return self.train_loss

    def record(self, done: int) -> dict[str, Any]:
        return {"train_loss": self.train_loss}

    def validate(self, done: int) -> Validation | None:
        net, val, batch = self.net, self.task.splits["val"], self.options.batch_size
        if self.frozen_feats is not None:
            val_feats: torch.Tensor | None = self.frozen_feats["val"]
        elif self._warm(done):  # the encoder has not moved yet: its val features once, for every warm-up epoch
            if self.start_val is None:
                self.start_val = _features(net, val, batch, self.device)
            val_feats = self.start_val
        else:
            val_feats = None
        logits = _logits(net, val, batch, self.device, val_feats)
        val_loss = float(F.cross_entropy(logits, torch.from_numpy(val.labels),
                                         weight=None if self.weight is None else self.weight.cpu()))
        m = score(val.labels, logits.argmax(1).numpy(), logits.numpy())
        row = {"seed": self.seed, "lr": self.lr, "epoch": done, "train_loss": self.train_loss,
               "val_loss": val_loss, **{f"val_{k}": v for k, v in m.items()}}
        return Validation({k: row[k] for k in ROW_KEYS}, m["balanced_accuracy"],
                          {"val_loss": val_loss, "epoch": float(done)})

    def better(self, v: Validation, best_score: float, best_metrics: dict[str, float]) -> bool:
        # Ties on balanced accuracy go to the lower val loss.
        return (v.score, -v.metrics["val_loss"]) > (best_score, -best_metrics.get("val_loss", math.inf))

    def _save(self, path: Path, done: int, state: TrainState | None) -> None:
        provenance = {"training": {"step": done, "run": str(self.run.path)}}
        extra = {CLASSIFIER_KEY: classifier_entry(self.net, self.task, self.options, self.encoder)}
        if state is None:
            save_model(self.model, path, provenance, extra)
        else:
            save_training(self.model, path, provenance, state, extra)

    def save_best(self, done: int, v: Validation) -> None:
        self._save(self.run.best, done, None)

    def save_last(self, done: int, state: TrainState, v: Validation | None) -> None:
        self._save(self.run.last, done, state)

    def rows(self) -> list[dict[str, Any]]:
        """The epochs.csv rows of the epochs metrics.jsonl holds (those before a resume)."""
        return [{k: r[k] for k in ROW_KEYS} for r in self.run.records() if r.get("kind") == "val"]


def _train_one(encoder: Encoder, task: TaskData, options: FinetuneOptions, seed: int, lr: float,
               device: torch.device, frozen_feats: dict[str, torch.Tensor] | None,
               on_epoch: Callable[[dict[str, Any]], None], run: RunDir,
               clock: list[float] | None = None) -> tuple[FinetuneNet, float, float, int]:
    """Train one (seed, lr) in the run folder ``run`` (continuing it from its last
    checkpoint when there is one); return the network at its best val epoch, that
    epoch's val score and loss, and the epoch. ``clock`` ([seconds, samples]) accumulates
    the time spent in training batches and the samples they held."""
    torch.manual_seed(seed)
    net = FinetuneNet(copy.deepcopy(encoder.trunk), options.head, len(task.classes),
                      encoder.normalisation).to(device)
    train, batch = task.train, options.batch_size
    if options.bn_adapt and options.mode == "full":
        parts = epoch_batches(len(train), batch, seed, 0)[:options.bn_adapt]  # epochs count from 1
        adapt_batchnorm(net.encoder, lambda x: net.pooled(x), (_tensor(train.images[p], device) for p in parts))
    # The head standardises its input with statistics of the (adapted) encoder's training
    # features: without it SGD underfits the uneven scales of pooled features. A resume
    # computes them again (a pure function of the start) before the checkpoint's weights.
    start_feats = frozen_feats["train"] if frozen_feats is not None else _features(net, train, batch, device)
    fit_standardisation(net.head, start_feats)
    epochs = _EpochTask(net, encoder, task, options, seed, lr, device, run, frozen_feats, start_feats, clock)
    config = {"command": "finetune", "seed": seed, "lr": lr, "task": task.name, "classes": task.classes,
              "encoder_sha256": encoder.sha256, "options": _run_options(options)}
    state = None
    if run.last.is_file():
        if run.read_config() != json.loads(json.dumps(config)):
            raise InputError(f"{run.config}: the run was started with other options, data or encoder; "
                             "cannot resume with these (use --overwrite to start again)")
        state = load_training(run.last).state
        load_weights(net, run.last)

    def shown(done: int, total: int, record: dict[str, Any]) -> None:
        if record["kind"] == "val":
            on_epoch({k: record[k] for k in ROW_KEYS})

    loop = TrainingLoop(run, Schedule(options.epochs, lr, 1, 1, 1), epochs, seed, on_record=shown)
    # The head's initial weights were drawn after seeding: the loop leaves the RNGs as they are.
    loop.begin(state, config)
    for row in epochs.rows():  # the epochs before a resume
        on_epoch(row)
    result = loop.run_steps()
    load_weights(net, run.best)
    net.eval()
    return net, result.best_score, result.best_metrics["val_loss"], int(result.best_metrics["epoch"])


def _run_options(options: FinetuneOptions) -> dict[str, Any]:
    """The options that shape a fine-tuning run's results (a resume must give the same)."""
    keep = {k: v for k, v in asdict(options).items() if k not in ("device", "overwrite", "resume")}
    return json.loads(json.dumps(keep, default=str))


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


def runs_folder(out: Path, options: FinetuneOptions) -> Path:
    """Where the runs of each (seed, lr) of the fine-tuning into ``out`` live until it is
    complete; checked against ``--resume`` and ``--overwrite``."""
    runs = out.with_name(out.name + ".runs")
    if options.resume and not runs.is_dir():
        raise InputError(f"{runs}: nothing to resume (no interrupted fine-tuning of {out})")
    if runs.exists() and not (options.resume or options.overwrite):
        raise InputError(f"{runs}: holds an interrupted fine-tuning of {out} "
                         "(use --resume to continue it or --overwrite to start again)")
    return runs


def finetune(table: str, out_dir: str | os.PathLike, options: FinetuneOptions,
             progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune a new head on the encoder of ``options.model``; write and return the report."""
    out = Path(out_dir)
    target = AtomicPath(out, overwrite=options.overwrite)
    runs = runs_folder(out, options)
    encoder = checked_encoder(options.model, random_seed=options.random_init)
    task = load_finetune_task(table, options, encoder)
    if runs.exists() and options.overwrite:
        shutil.rmtree(runs)
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
        for i, lr in enumerate(options.lr_grid):
            net, val_score, val_loss, epoch = _train_one(encoder, task, options, seed, lr, device,
                                                         frozen_feats, on_epoch, RunDir(runs / f"seed{seed}-lr{i}"),
                                                         clock)
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
        payload[CLASSIFIER_KEY] = classifier_entry(model0, task, options, encoder)
        torch.save(payload, target.tmp / "model.pt")
        target.commit()
    except BaseException:
        target.abort()
        raise
    shutil.rmtree(runs, ignore_errors=True)  # OUT is complete: nothing left to resume
    report["out"] = str(out)
    return report
