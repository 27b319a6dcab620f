"""``pretrain()``: multi-task pre-training of one encoder (Mormont et al.).

A run lives in a training run directory (:class:`~cerberus_cli.training.rundir.RunDir`:
config.json, metrics.jsonl/.csv, plot.png, checkpoints/last.pt and best.pt). Both
checkpoints are ordinary Cerberus checkpoints of an encoder-only model (no heads in
the model config), so ``cerberus features``, ``probe``, ``finetune`` and
``train --init`` read them as they are; the task heads ride along under
``pretrain_heads`` and ``last.pt`` also carries the training state (optimizer, RNG,
step, metrics mark) under the same digest as the trainer's, for a bit-exact resume.

Protocol: batches drawn task-balanced; per-sample CE averaged over the batch; head
gradients rescaled by B/|B_task|; SGD with momentum, heads at ``lr * head_lr_mult``;
the first ``warmup`` steps train the heads only, with the encoder frozen in eval mode.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cerberus_cli.core.errors import CheckpointError, InputError, first_line
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.model.device import resolve_device
from cerberus_cli.model.encoder import ResNetEncoder
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.training.plot import plot_run
from cerberus_cli.training.run_checkpoints import (
    TrainState,
    capture_rng,
    content_digest,
    load_training,
    model_payload,
    restore_rng,
    seed_all,
)
from cerberus_cli.training.rundir import RunDir
from cerberus_cli.training.tempfiles import write_file
from cerberus_cli.transfer.encoder import Encoder, load_encoder
from cerberus_cli.transfer.metrics import metrics as score
from cerberus_cli.transfer.multitask import (
    MultiTaskNet,
    multitask_loss,
    rescale_head_grads,
    set_encoder_frozen,
)
from cerberus_cli.transfer.patches import PatchReader
from cerberus_cli.transfer.sampling import task_balanced_batch
from cerberus_cli.transfer.taskdata import SplitData, TaskData, load_tasks
from cerberus_cli.transfer.tuning_options import PretrainOptions

#: ``progress(step, steps, record)``: after each logged step or validation; never prints.
Progress = Callable[[int, int, dict[str, Any]], None]
HEADS_KEY = "pretrain_heads"


@dataclass
class PretrainResult:
    """Where a run's files are and what it measured."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_score: float
    steps: int
    first_losses: dict[str, float] = field(default_factory=dict)
    last_losses: dict[str, float] = field(default_factory=dict)
    samples_per_s: float = 0.0


def checked_encoder(spec: str | None, **kwargs: Any) -> Encoder:
    """:func:`~cerberus_cli.transfer.encoder.load_encoder`, with tensors of the wrong shape
    (a file of another layout) reported as one line naming the file."""
    try:
        return load_encoder(spec, **kwargs)
    except RuntimeError as exc:
        found = re.search(r"size mismatch for [\w.]+", str(exc))
        raise CheckpointError(f"{spec}: not an encoder of a known layout "
                              f"({found.group(0) if found else first_line(exc)})") from None


def initial_encoder(options: PretrainOptions) -> tuple[ResNetEncoder, str, int, dict[str, Any]]:
    """(trunk, arch, stem stride, provenance note) of the encoder a run starts from."""
    if options.init == "random":
        torch.manual_seed(options.seed)
        return (ResNetEncoder(options.arch, options.stem_stride), options.arch, options.stem_stride,
                {"init": "random", "seed": options.seed})
    enc = checked_encoder(options.init, torchvision_mpp=options.mpp, torchvision_stem=options.stem_stride)
    return enc.trunk, enc.arch, enc.stem_stride, {
        "init": options.init, "init_sha256": enc.sha256, "init_normalisation": enc.normalisation}


def encoder_model(trunk: ResNetEncoder, arch: str, stem: int, mpp: float, name: str) -> CerberusNet:
    """An encoder-only Cerberus model around ``trunk`` (shared, not copied)."""
    net = CerberusNet(ModelConfig(encoder=arch, stem_stride=stem, heads=(), mpp=mpp,  # type: ignore[arg-type]
                                  name=name))
    net.encoder = trunk
    return net


def save_pretrain_checkpoint(path: Path, model: CerberusNet, heads: nn.ModuleDict,
                             provenance: dict[str, Any], state: TrainState | None) -> Path:
    """A Cerberus checkpoint of the encoder plus the task heads (and the training state)."""
    payload = model_payload(model, provenance)
    payload[HEADS_KEY] = {k: v.detach().cpu().clone() for k, v in heads.state_dict().items()}
    if state is not None:
        payload["training_state"] = state.to_dict()
        payload["digest"] = content_digest(payload)
    return write_file(path, lambda tmp: torch.save(payload, tmp))


def read_heads(path: Path) -> dict[str, torch.Tensor]:
    """The task heads stored in a pre-training checkpoint."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    heads = obj.get(HEADS_KEY) if isinstance(obj, dict) else None
    if not isinstance(heads, dict):
        raise CheckpointError(f"{path}: not a 'cerberus pretrain' checkpoint (no task heads)")
    return heads


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


@torch.no_grad()
def validate(net: MultiTaskNet, tasks: list[TaskData], batch: int, device: torch.device
             ) -> dict[str, float]:
    """Per task with a val split: loss, accuracy, balanced accuracy; ``val_score`` = the
    mean balanced accuracy over those tasks."""
    net.eval()
    out: dict[str, float] = {}
    scores = []
    for task in tasks:
        val: SplitData | None = task.splits.get("val")
        if val is None:
            continue
        logits = torch.cat([net.heads[task.name](net.features(_to_tensor(val.images[i:i + batch], device)))
                            for i in range(0, len(val), batch)]).float().cpu()
        y = torch.from_numpy(val.labels)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        m = score(val.labels, logits.argmax(1).numpy(), logits.numpy())
        out[f"{task.name}/val_loss"] = loss
        out[f"{task.name}/val_accuracy"] = m["accuracy"]
        out[f"{task.name}/val_balanced_accuracy"] = m["balanced_accuracy"]
        scores.append(m["balanced_accuracy"])
    if scores:
        out["val_score"] = float(np.mean(scores))
    return out


def _plot(run: RunDir, tasks: list[TaskData]) -> None:
    records = run.records()
    losses = {t.name: [(r["step"], r[f"loss/{t.name}"]) for r in records
                       if r.get("kind") == "train" and f"loss/{t.name}" in r] for t in tasks}
    accs = {t.name: [(r["step"], r[f"{t.name}/val_balanced_accuracy"]) for r in records
                     if r.get("kind") == "val" and f"{t.name}/val_balanced_accuracy" in r] for t in tasks}
    plot_run(losses, {f"{k} bal. acc.": v for k, v in accs.items() if v}, run.plot)


def _config(options: PretrainOptions, tasks: list[TaskData], arch: str, stem: int,
            init: dict[str, Any]) -> dict[str, Any]:
    return {"command": "pretrain", "options": dataclasses.asdict(options), "arch": arch,
            "stem_stride": stem, "init": init,
            "tasks": {t.name: {"classes": t.classes, "source": t.source,
                               "sizes": {k: len(v) for k, v in t.splits.items()}} for t in tasks}}


def pretrain(out_dir: str | Path, options: PretrainOptions,
             progress: Progress | None = None) -> PretrainResult:
    """Pre-train an encoder on every task of ``options.data``; see the module docstring.

    Raises:
        InputError: bad data (one class, empty task, label sets differing between
            splits), a folder the run may not use, or a resume with other tasks.
    """
    run, mode = RunDir.prepare(out_dir, options.resume, options.overwrite)
    device = resolve_device(options.device)
    reader = PatchReader(options.mpp, options.patch_px, options.image_mpp)
    tasks = load_tasks(list(options.data), reader, options.patch_px, options.group_regex,
                       options.allow_group_overlap)
    names = [t.name for t in tasks]
    seed_all(options.seed)
    state: TrainState | None = None
    if mode == "resume":
        point = load_training(run.last)
        state = point.state
        cfg = run.read_config()
        saved = {k: v["classes"] for k, v in cfg.get("tasks", {}).items()}
        if saved != {t.name: t.classes for t in tasks}:
            raise InputError(f"{run.path}: the run was started with other tasks or classes "
                             f"({', '.join(saved)}); cannot resume with these")
        trunk, arch, stem = point.model.encoder, str(point.model.config.encoder), point.model.config.stem_stride
        init = cfg.get("init", {})
    else:
        trunk, arch, stem, init = initial_encoder(options)
    torch.manual_seed(options.seed)
    net = MultiTaskNet(trunk, {t.name: len(t.classes) for t in tasks})
    if state is not None:
        net.heads.load_state_dict(read_heads(run.last))
    net.to(device)
    optimizer = torch.optim.SGD(
        [{"params": list(net.encoder.parameters()), "lr": options.lr},
         {"params": list(net.heads.parameters()), "lr": options.lr * options.head_lr_mult}],
        lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
    model = encoder_model(net.encoder, arch, stem, options.mpp, f"pretrain-{arch}")
    start, best_score = 0, float("-inf")
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        restore_rng(state.rng)
        run.restore_metrics(state.metrics, state.step)
        start, best_score = state.step, state.best_score
    else:
        run.create(_config(options, tasks, arch, stem, init))

    def provenance(step: int) -> dict[str, Any]:
        return {"pretrain": {"tasks": {t.name: t.classes for t in tasks}, "init": init,
                             "steps": options.steps, "batch_size": options.batch_size},
                "training": {"step": step, "run": str(run.path)}}

    splits = [t.train for t in tasks]
    batch = options.batch_size
    sums = {n: 0.0 for n in names}
    counts = {n: 0 for n in names}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    train_seconds, trained = 0.0, 0
    for step in range(start, options.steps):
        t0 = time.perf_counter()
        frozen = step < options.warmup
        set_encoder_frozen(net, frozen)
        images, task_ids, labels = task_balanced_batch(splits, batch, options.seed, step, options.augment)
        x = _to_tensor(images, device)
        optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(not frozen):
            feats = net.features(x)
        loss, per_task, n_task = multitask_loss(net.heads, feats, torch.from_numpy(task_ids).to(device),
                                                torch.from_numpy(labels).to(device), names)
        loss.backward()
        rescale_head_grads(net.heads, n_task, batch)
        optimizer.step()
        train_seconds += time.perf_counter() - t0
        trained += batch
        for n, v in per_task.items():
            sums[n] += v * n_task[n]
            counts[n] += n_task[n]
        done = step + 1
        if done % options.log_every == 0 or done == options.steps:
            means = {n: sums[n] / counts[n] for n in names if counts[n]}
            first = first or dict(means)
            last = dict(means)
            record: dict[str, Any] = {"kind": "train", "step": done, "warmup": frozen,
                                      "loss": float(np.mean(list(means.values()))),
                                      **{f"loss/{n}": v for n, v in means.items()}}
            run.log(record)
            sums = {n: 0.0 for n in names}
            counts = {n: 0 for n in names}
            if progress is not None:
                progress(done, options.steps, record)
        if done % options.val_every == 0 or done == options.steps:
            values = validate(net, tasks, batch, device)
            if values:
                record = {"kind": "val", "step": done, **values}
                run.log(record)
                if values["val_score"] > best_score:
                    best_score = values["val_score"]
                    save_pretrain_checkpoint(run.best, model, net.heads,
                                             {**provenance(done), "best": values}, None)
                if progress is not None:
                    progress(done, options.steps, record)
        if done % options.save_every == 0 or done == options.steps:
            train_state = TrainState(step=done, optimizer=optimizer.state_dict(), lr=options.lr,
                                     rng=capture_rng(), loader={"seed": options.seed, "next_step": done},
                                     metrics=run.metrics_mark(), best_score=best_score)
            save_pretrain_checkpoint(run.last, model, net.heads, provenance(done), train_state)
            run.write_csv()
            _plot(run, tasks)
    net.eval()
    return PretrainResult(run.path, run.last, run.best if run.best.is_file() else None, best_score,
                          options.steps, first, last, trained / train_seconds if train_seconds else 0.0)
