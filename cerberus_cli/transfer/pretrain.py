"""``pretrain()``: multi-task pre-training of one encoder (Mormont et al.).

A run lives in a training run directory (:class:`~cerberus_cli.training.rundir.RunDir`:
config.json, metrics.jsonl/.csv, plot.png, checkpoints/last.pt and best.pt). Both
checkpoints are ordinary Cerberus checkpoints of an encoder-only model (no heads in
the model config), so ``cerberus features``, ``probe``, ``finetune`` and
``train --init`` read them as they are; the task heads ride along under
``pretrain_heads`` and ``last.pt`` also carries the training state (optimizer, RNG,
step, metrics mark) under the same digest as the trainer's, for a bit-exact resume.
Schedule, logging, checkpoints and resume are the shared loop's
(:mod:`cerberus_cli.training.loop`); this module supplies the step, the training
record (mean losses since the last one), the validation and the checkpoints' contents.

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

from cerberus_cli.core.errors import CheckpointError, InputError, first_line
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.model.device import resolve_device
from cerberus_cli.model.encoder import build_encoder
from cerberus_cli.model.encoder_protocol import FeatureEncoder
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.training.loop import LoopTask, Schedule, TrainingLoop, Validation
from cerberus_cli.training.plot import plot_run
from cerberus_cli.training.run_checkpoints import TrainState, load_training, save_model, save_training, seed_all
from cerberus_cli.training.rundir import RunDir
from cerberus_cli.transfer.loaded_encoder import Encoder, load_encoder
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
    """:func:`~cerberus_cli.transfer.loaded_encoder.load_encoder`, with tensors of the wrong shape
    (a file of another layout) reported as one line naming the file."""
    try:
        return load_encoder(spec, **kwargs)
    except RuntimeError as exc:
        found = re.search(r"size mismatch for [\w.]+", str(exc))
        raise CheckpointError(f"{spec}: not an encoder of a known layout "
                              f"({found.group(0) if found else first_line(exc)})") from None


def initial_encoder(options: PretrainOptions) -> tuple[FeatureEncoder, str, int, dict[str, Any]]:
    """(trunk, arch, stem stride, provenance note) of the encoder a run starts from."""
    if options.init == "random":
        torch.manual_seed(options.seed)
        return (build_encoder(options.arch, options.stem_stride), options.arch, options.stem_stride,
                {"init": "random", "seed": options.seed})
    enc = checked_encoder(options.init, torchvision_mpp=options.mpp, torchvision_stem=options.stem_stride)
    return enc.trunk, enc.arch, enc.stem_stride, {
        "init": options.init, "init_sha256": enc.sha256, "init_normalisation": enc.normalisation}


def encoder_model(trunk: FeatureEncoder, arch: str, stem: int, mpp: float, name: str) -> CerberusNet:
    """An encoder-only Cerberus model around ``trunk`` (shared, not copied)."""
    net = CerberusNet(ModelConfig(encoder=arch, stem_stride=stem, heads=(), mpp=mpp,  # type: ignore[arg-type]
                                  name=name))
    net.encoder = trunk
    return net


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


class _PretrainTask(LoopTask):
    """What ``pretrain`` supplies to the shared loop."""

    def __init__(self, options: PretrainOptions, net: MultiTaskNet, model: CerberusNet,
                 optimizer: torch.optim.Optimizer, tasks: list[TaskData], device: torch.device,
                 run: RunDir, init: dict[str, Any]) -> None:
        self.options, self.net, self.model, self.optimizer = options, net, model, optimizer
        self.tasks, self.device, self.run, self.init = tasks, device, run, init
        self.names = [t.name for t in tasks]
        self.splits = [t.train for t in tasks]
        self.sums = {n: 0.0 for n in self.names}
        self.counts = {n: 0 for n in self.names}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.seconds, self.samples = 0.0, 0

    def step(self, step: int) -> float:
        o, net, batch = self.options, self.net, self.options.batch_size
        t0 = time.perf_counter()
        frozen = step < o.warmup
        set_encoder_frozen(net, frozen)
        images, task_ids, labels = task_balanced_batch(self.splits, batch, o.seed, step, o.augment)
        x = _to_tensor(images, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(not frozen):
            feats = net.features(x)
        loss, per_task, n_task = multitask_loss(net.heads, feats, torch.from_numpy(task_ids).to(self.device),
                                                torch.from_numpy(labels).to(self.device), self.names)
        loss.backward()
        rescale_head_grads(net.heads, n_task, batch)
        self.optimizer.step()
        self.seconds += time.perf_counter() - t0
        self.samples += batch
        for n, v in per_task.items():
            self.sums[n] += v * n_task[n]
            self.counts[n] += n_task[n]
        return float(loss.detach())

    def record(self, done: int) -> dict[str, Any]:
        """Mean losses per task over the steps since the last record."""
        means = {n: self.sums[n] / self.counts[n] for n in self.names if self.counts[n]}
        self.first = self.first or dict(means)
        self.last = dict(means)
        self.sums = {n: 0.0 for n in self.names}
        self.counts = {n: 0 for n in self.names}
        return {"warmup": done - 1 < self.options.warmup, "loss": float(np.mean(list(means.values()))),
                **{f"loss/{n}": v for n, v in means.items()}}

    def validate(self, done: int) -> Validation | None:
        values = validate(self.net, self.tasks, self.options.batch_size, self.device)
        return Validation(values, values["val_score"], values) if values else None

    def _provenance(self, step: int) -> dict[str, Any]:
        o = self.options
        return {"pretrain": {"tasks": {t.name: t.classes for t in self.tasks}, "init": self.init,
                             "steps": o.steps, "batch_size": o.batch_size},
                "training": {"step": step, "run": str(self.run.path)}}

    def _heads(self) -> dict[str, Any]:
        return {HEADS_KEY: {k: v.detach().cpu().clone() for k, v in self.net.heads.state_dict().items()}}

    def save_best(self, done: int, v: Validation) -> None:
        save_model(self.model, self.run.best, {**self._provenance(done), "best": v.record}, self._heads())

    def save_last(self, done: int, state: TrainState, v: Validation | None) -> None:
        save_training(self.model, self.run.last, self._provenance(done), state, self._heads())

    def checkpointed(self, done: int) -> None:
        _plot(self.run, self.tasks)


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
    seed_all(options.seed)
    state: TrainState | None = None
    heads: dict[str, torch.Tensor] | None = None
    if mode == "resume":
        point = load_training(run.last, (HEADS_KEY,))
        state = point.state
        heads = point.extra.get(HEADS_KEY)
        if not isinstance(heads, dict):
            raise CheckpointError(f"{run.last}: not a 'cerberus pretrain' checkpoint (no task heads)")
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
    if heads is not None:
        net.heads.load_state_dict(heads)
    net.to(device)
    optimizer = torch.optim.SGD(
        [{"params": list(net.encoder.parameters()), "lr": options.lr},
         {"params": list(net.heads.parameters()), "lr": options.lr * options.head_lr_mult}],
        lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
    model = encoder_model(net.encoder, arch, stem, options.mpp, f"pretrain-{arch}")
    task = _PretrainTask(options, net, model, optimizer, tasks, device, run, init)
    # The initial heads were drawn after seeding: the loop leaves the RNGs as they are.
    loop = TrainingLoop(run, Schedule(options.steps, options.lr, options.log_every, options.val_every,
                                      options.save_every), task, options.seed, on_record=progress)
    loop.begin(state, _config(options, tasks, arch, stem, init))
    result = loop.run_steps()
    net.eval()
    return PretrainResult(run.path, run.last, run.best if run.best.is_file() else None, result.best_score,
                          options.steps, task.first, task.last,
                          task.samples / task.seconds if task.seconds else 0.0)
