"""The training loop: ``train(TrainOptions) -> TrainResult``.

One optimizer (Adam) over the whole network. Each batch decodes only the heads of
the tasks it holds; gradients are reset to ``None`` before every backward pass, so
Adam leaves the parameters of absent decoders untouched (no gradient, no moment
update): the encoder learns from every batch, a decoder only from batches of its
task ("dynamic freezing"). The subtyping stage (``subtype``) trains one type decoder
(or, for ``tissue``, the tissue-type head on the frozen encoder) with everything else
frozen, batch-norm statistics included. The tissue stage with ``tune_deepest`` also
trains the deepest encoder block and the bridge, anchored on segmentation patches so
the decoders' input stays as it was (:mod:`cerberus_cli.training.anchor`).

Schedule, logging, checkpoints and resume are the shared loop's
(:mod:`cerberus_cli.training.loop`); this module supplies the step, its record, the
validation and what the checkpoints hold. Resuming is bit-for-bit: batches are a pure
function of (seed, step), and the one checkpoint file carries the weights (fp32), the
optimizer, the AMP scaler, every RNG state and where metrics.jsonl stood
(:mod:`cerberus_cli.training.run_checkpoints`). Every
training and validation item is checked once before the first step
(:mod:`cerberus_cli.training.datacheck`), and the run directory is created only then.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import torch

from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.core.vocabulary import TASKS, TISSUE
from cerberus_cli.model.device import resolve_device
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.training.anchor import BridgeAnchor, tuned_modules
from cerberus_cli.training.augment import AugmentConfig
from cerberus_cli.training.batches import BatchBuilder, PatchConfig, batch_loader
from cerberus_cli.training.datacheck import check_datasets
from cerberus_cli.training.datasets import (
    ConcatDataset,
    TaskDataset,
    open_dataset,
)
from cerberus_cli.training.loop import LoopTask, Schedule, TrainingLoop, Validation
from cerberus_cli.training.losses import task_losses
from cerberus_cli.training.model_init import build_model, heads_for_tasks
from cerberus_cli.training.options import DEFAULT_STEPS, DataSpec, TrainOptions
from cerberus_cli.training.plot import plot_run
from cerberus_cli.training.run_checkpoints import ResumePoint, TrainState, load_training, save_model, save_training
from cerberus_cli.training.rundir import Mode, RunDir
from cerberus_cli.training.splits import apply_split_file, random_split
from cerberus_cli.training.task_sampler import SamplerConfig, SamplerMode, TaskSampler, source_item_probs
from cerberus_cli.training.tempfiles import write_file
from cerberus_cli.training.validation import score, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    steps: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_score: float
    best_metrics: dict[str, float]
    final_losses: dict[str, float]
    samples_per_s: dict[str, float] = field(default_factory=dict)


# --- data --------------------------------------------------------------------------

def _concat(parts: list[TaskDataset]) -> TaskDataset:
    """Several sources for one task become one dataset (items of all of them)."""
    if len(parts) == 1:
        return parts[0]
    return ConcatDataset(parts)


@dataclass
class TrainData:
    """Training and validation datasets per task, and how each task's items are drawn."""

    train: dict[str, TaskDataset]
    val: dict[str, TaskDataset]
    #: Per task, the probability of each training item (weighted sources only).
    item_probs: dict[str, tuple[float, ...]]


def _open(options: TrainOptions, spec: DataSpec, mpp: float) -> TaskDataset:
    return open_dataset(spec.task, spec.path, spec.format, mpp, options.tissue_map,
                        options.class_maps.get(spec.path))


def load_data(options: TrainOptions, mpp: float, tasks: list[str]) -> TrainData:
    """Training and validation datasets per task, at the model resolution."""
    train: dict[str, list[TaskDataset]] = {}
    weights: dict[str, list[float | None]] = {}
    val: dict[str, list[TaskDataset]] = {}
    for spec in options.data:
        if spec.task not in tasks:
            continue
        ds = _open(options, spec, mpp)
        split = options.splits.get(spec.task) or options.splits.get("*")
        if split:
            tr, va = apply_split_file(ds, split)
        elif options.val_data:
            tr, va = ds, None
        else:
            tr, va = random_split(ds, options.val_fraction, options.seed)
        train.setdefault(spec.task, []).append(tr)
        weights.setdefault(spec.task, []).append(spec.weight)
        if va is not None:
            val.setdefault(spec.task, []).append(va)
        log.info("data %s: %d train, %d val%s", ds.describe(), len(tr), 0 if va is None else len(va),
                 "" if spec.weight is None else f", weight {spec.weight:g}")
    for spec in options.val_data:
        if spec.task in tasks:
            ds = _open(options, spec, mpp)
            val.setdefault(spec.task, []).append(ds)
            log.info("validation data %s", ds.describe())
    missing = [t for t in tasks if t not in train]
    if missing:
        raise InputError(f"no training data for task(s) {', '.join(missing)}: add --data TASK=PATH")
    probs = {t: source_item_probs([len(p) for p in parts], weights[t]) for t, parts in train.items()}
    return TrainData({t: _concat(v) for t, v in train.items()}, {t: _concat(v) for t, v in val.items()},
                     {t: p for t, p in probs.items() if p is not None})


# --- helpers -----------------------------------------------------------------------

def _tasks(options: TrainOptions) -> list[str]:
    with_data = list(dict.fromkeys(d.task for d in options.data))
    tasks = options.tasks or with_data
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError(f"--tasks: unknown task(s) {', '.join(unknown)} (choose from {', '.join(TASKS)})")
    if options.subtype:
        # Segmentation data serves only the anchor of a tune_deepest tissue stage.
        anchored = [t for t in TASKS if t in with_data and t != TISSUE] if options.tune_deepest else []
        return [options.subtype] + anchored
    return [t for t in TASKS if t in tasks]


#: The head each ``--subtype`` stage trains alone.
STAGE_HEADS = {"nuclei": "nuclei_type", "gland": "gland_type", "tissue": "tissue"}


def _head_modules(model: CerberusNet, head: str) -> list[torch.nn.Module]:
    """The modules that belong to ``head`` alone (its decoder and output, or the tissue head)."""
    if head == model.tissue_name:
        assert model.tissue_head is not None  # a model with a tissue name has a tissue head
        return [model.tissue_head]
    return [model.decoders[head], model.heads[head]]


def _trainable(model: CerberusNet, subtype_head: str | None, freeze_encoder: bool = False,
               tune_deepest: bool = False) -> list[torch.nn.Parameter]:
    """Parameters the optimizer owns; in a single-head stage only that head's (with
    ``tune_deepest``, the deepest encoder block's and the bridge's too)."""
    if subtype_head is None:
        # The bridge feeds every decoder: a frozen encoder keeps it too, or training one
        # task's decoder would move what the other tasks' decoders read.
        bridge = getattr(model, "bridge", None)
        for p in [*model.encoder.parameters(), *(bridge.parameters() if bridge is not None else ())]:
            p.requires_grad_(not freeze_encoder)
        return [p for p in model.parameters() if p.requires_grad]
    keep = set()
    for module in _head_modules(model, subtype_head) + (tuned_modules(model) if tune_deepest else []):
        keep |= {id(p) for p in module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return [p for p in model.parameters() if p.requires_grad]


def _set_mode(model: CerberusNet, subtype_head: str | None, keep_encoder_bn: bool = False,
              freeze_encoder: bool = False) -> None:
    if subtype_head is None:
        model.train()
        if freeze_encoder:
            model.encoder.eval()
        elif keep_encoder_bn:
            for module in model.encoder.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return
    # Frozen parts stay in eval mode so their batch-norm statistics do not move.
    model.eval()
    for module in _head_modules(model, subtype_head):
        module.train()


def schedule(options: TrainOptions) -> Schedule:
    """Steps, learning rate (dropped at ``--lr-drop-at``, by default 80 % of ``--steps``)
    and the logging, validation and checkpoint intervals of a run."""
    assert options.steps is not None, "--steps is resolved before training"
    drop = options.lr_drop_at if options.lr_drop_at is not None else int(0.8 * options.steps)
    return Schedule(options.steps, options.lr, options.log_every, options.val_every, options.checkpoint_every,
                    drop_at=drop, drop_to=options.lr_drop_to, log_first=True)


def _anchor(options: TrainOptions, model: CerberusNet, init: dict) -> BridgeAnchor:
    """The anchor of a tune_deepest stage: always the --init model's features, also on resume."""
    if not options.resume:
        return BridgeAnchor(model)
    from cerberus_cli.model.registry import load_model

    start = load_model(options.init)
    if init.get("init_sha256") and start.sha256 != init["init_sha256"]:
        raise InputError(f"--init {options.init}: the file changed since the run started; "
                         "its features are what the run anchors to")
    return BridgeAnchor(start.model)


# --- the run's options -------------------------------------------------------------

def _run_options(run: RunDir, mode: Mode, options: TrainOptions) -> TrainOptions:
    """The options this run goes by.

    A new run takes those given. A resume, and the fresh start of a run that stopped
    before its first checkpoint, take those the run was started with (config.json):
    only how long to run and how to show it may change.
    """
    if mode == "new":
        return options if options.steps is not None else replace(options, steps=DEFAULT_STEPS)
    if not run.config.is_file():
        if mode == "resume":
            raise InputError(f"{run.config}: missing, so the run's options are unknown; cannot resume")
        if not options.data:
            raise InputError(f"{run.path}: the run stopped before writing config.json; give its options "
                             "again with --overwrite")
        log.warning("%s: no checkpoint and no config.json: starting again from step 0 with the options given",
                    run.path)
        return replace(options, resume=False, overwrite=False, steps=options.steps or DEFAULT_STEPS)
    config = run.read_config()
    saved = config.get("options") if isinstance(config, dict) else None
    if not isinstance(saved, dict):
        raise InputError(f"{run.config}: no 'options' record; cannot resume")
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(saved) - known)
    if unknown:
        log.warning("%s: ignoring options this version does not know: %s", run.config, ", ".join(unknown))
    saved = {k: v for k, v in saved.items() if k in known}
    try:
        saved["data"] = [DataSpec(**d) for d in saved.get("data", [])]
        saved["val_data"] = [DataSpec(**d) for d in saved.get("val_data", [])]
    except TypeError as exc:
        raise InputError(f"{run.config}: malformed data record: {exc}") from None
    # Only how long to run and how it executes may change on resume: the logging schedule
    # stays the run's, so its metrics are those of an uninterrupted run.
    for key in ("progress", "workers", "threads"):
        saved[key] = getattr(options, key)
    saved.update(resume=mode == "resume", overwrite=False, output=options.output,
                 steps=options.steps or saved.get("steps") or DEFAULT_STEPS)
    if mode == "restart":
        log.warning("%s: the run stopped before its first checkpoint: starting it again from step 0", run.path)
    return TrainOptions(**saved)


def _provenance(options: TrainOptions, step: int, init: dict, metrics: dict[str, float],
                data: dict[str, TaskDataset]) -> dict[str, Any]:
    return {
        "training": {
            "step": step,
            "options": options.to_dict(),
            "init": init,
            "data": {t: ds.describe() for t, ds in data.items()},
            # Plain floats: a checkpoint holds only tensors and plain values (safe loading).
            "validation": {k: float(v) for k, v in metrics.items()},
        }
    }


# --- one step ----------------------------------------------------------------------

def to_device(batch: dict, device: torch.device) -> dict:
    """Batch arrays as tensors on ``device``: targets as int64, weights float32."""
    out = dict(batch)
    for k in ("images", "inst", "weight", "type", "label"):
        if k in batch:
            t = torch.as_tensor(batch[k]).to(device, non_blocking=True)
            out[k] = t.long() if k in ("inst", "type", "label") else t
    return out


def train_step(model: CerberusNet, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
               subtype_head: str | None = None, scaler: torch.amp.GradScaler | None = None,
               amp_dtype: torch.dtype | None = None, tissue_bn: str = "update",
               freeze_encoder: bool = False, anchor: BridgeAnchor | None = None,
               anchor_weight: float = 1.0) -> dict[str, float]:
    """One optimisation step on one batch; returns the loss of each head.

    Only the heads of the tasks in the batch are decoded, and gradients are reset to
    ``None`` first, so Adam skips the other decoders entirely (dynamic freezing).
    With ``tissue_bn="keep"`` a tissue batch runs the encoder's batch norms on their
    running statistics and leaves them as they are; ``freeze_encoder`` does that on every
    batch (the optimizer should not own the encoder's parameters then). With an
    ``anchor``, a segmentation batch gives the anchor loss alone (times ``anchor_weight``).
    """
    _set_mode(model, subtype_head, keep_encoder_bn=tissue_bn == "keep" and batch["super_task"] == TISSUE,
              freeze_encoder=freeze_encoder)
    cfg = model.config
    batch = to_device(batch, device)
    images = batch["images"]
    if batch["super_task"] == TISSUE:
        heads, tissue_mode = [], "centre"
    else:
        heads = [subtype_head] if subtype_head else [h for h in heads_for_tasks(batch["task"])
                                                       if h in model.seg_heads]
        tissue_mode = None
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with ctx:
        if anchor is not None and batch["super_task"] != TISSUE:
            losses = {"anchor": anchor_weight * anchor.loss(model, images)}
        else:
            out = model(images, heads=heads, tissue=tissue_mode)
            losses = task_losses(out, batch, cfg, [subtype_head] if subtype_head else None)
    optimizer.zero_grad(set_to_none=True)
    # No loss happens when, say, no patch of a subtyping batch holds a typed object.
    if losses:
        total = sum(losses.values())
        assert isinstance(total, torch.Tensor)  # a sum of one or more loss tensors
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {k: float(v.detach()) for k, v in losses.items()}


# --- the loop ----------------------------------------------------------------------

#: Progress of a training run: (steps done, total steps, last loss; NaN before the first).
TrainProgress = Callable[[int, int, float], None]


class _TrainTask(LoopTask):
    """What ``train`` supplies to the shared loop: its step, records, validation and checkpoints."""

    def __init__(self, options: TrainOptions, model: CerberusNet, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, device: torch.device, run: RunDir,
                 sched: Schedule, init: dict, data: TrainData, subtype_head: str | None,
                 anchor: BridgeAnchor | None) -> None:
        self.options, self.model, self.optimizer, self.scaler = options, model, optimizer, scaler
        self.device, self.run, self.sched, self.init, self.data = device, run, sched, init, data
        self.subtype_head, self.anchor = subtype_head, anchor
        self.amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if options.amp else None
        self.batches: Any = None
        self.super_task = ""
        self.losses: dict[str, float] = {}
        self.timing: dict[str, list[float]] = {}

    def step(self, step: int) -> float:
        batch = next(self.batches)
        assert batch["step"] == step, (batch["step"], step)  # the loader serves steps in order
        o = self.options
        t0 = time.perf_counter()
        self.losses = train_step(self.model, self.optimizer, batch, self.device, self.subtype_head, self.scaler,
                                 self.amp_dtype, o.tissue_bn, o.freeze_encoder, self.anchor, o.anchor_weight)
        self.timing.setdefault(batch["super_task"], []).append(time.perf_counter() - t0)
        self.super_task = batch["super_task"]
        return float(sum(self.losses.values()))

    def record(self, done: int) -> dict[str, Any]:
        return {"lr": self.sched.lr_at(done - 1), "super_task": self.super_task,
                "loss": sum(self.losses.values()), **{f"loss_{k}": v for k, v in self.losses.items()}}

    def validate(self, done: int) -> Validation | None:
        if not self.data.val:
            return None
        metrics = validate(self.model, self.data.val, self.device, self.options.val_limit)
        s = score(metrics)
        return Validation({"score": s, **metrics}, s, metrics)

    def better(self, v: Validation, best_score: float, best_metrics: dict[str, float]) -> bool:
        return v.score > best_score or not math.isfinite(best_score)

    def save_best(self, done: int, v: Validation) -> None:
        save_model(self.model, self.run.best, self._provenance(done, v))

    def save_last(self, done: int, state: TrainState, v: Validation | None) -> None:
        save_training(self.model, self.run.last, self._provenance(done, v), state)

    def _provenance(self, step: int, v: Validation | None) -> dict[str, Any]:
        return _provenance(self.options, step, self.init, v.metrics if v is not None else {}, self.data.train)


def train(options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
    """Train (or resume, or subtype) a Cerberus model as ``options`` say.

    Raises:
        InputError: bad options, datasets or checkpoints (one-line messages).
    """
    run, mode = RunDir.prepare(options.output, options.resume, options.overwrite)
    options = _run_options(run, mode, options)
    options.validate()
    assert options.steps is not None  # validate() rejects a missing --steps
    steps: int = options.steps
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    tasks = _tasks(options)
    subtype_head = STAGE_HEADS.get(options.subtype or "")
    if subtype_head and options.init in ("random", "imagenet"):
        raise InputError("--subtype needs --init MODEL: the trained model whose encoder and decoders stay frozen")
    if options.tune_deepest and len(tasks) == 1:
        raise InputError("--tune-deepest needs segmentation patches to anchor the decoders' features: "
                         "add --data gland|lumen|nuclei=PATH")
    if options.freeze_encoder and options.init in ("random", "imagenet"):
        raise InputError("--freeze-encoder needs --init MODEL: the trained model whose encoder stays frozen")

    point: ResumePoint | None = None
    if mode == "resume":
        point = load_training(run.last)
        model, init = point.model, point.provenance.get("training", {}).get("init", {})
        if point.state.step >= steps:
            raise InputError(f"{run.path}: already at step {point.state.step}; "
                             "give --steps larger than that to continue")
    else:
        model, init = build_model(options.arch, options.init, tasks, options.tissue_patch,
                                  options.imagenet_weights, [subtype_head] if subtype_head else None,
                                  options.seed)
    cfg = model.config
    # A tune_deepest stage's segmentation data feeds only the anchor, whatever heads exist.
    missing_heads = [t for t in (tasks[:1] if options.subtype else tasks) if t not in cfg.tasks]
    if missing_heads:
        raise InputError(f"--init {options.init}: the model has no head for task(s) {', '.join(missing_heads)}")
    model.to(device)

    data = load_data(options, cfg.mpp, tasks)
    train_sets, val_sets = data.train, data.val
    check_datasets([*train_sets.values(), *val_sets.values()], threads=max(1, options.workers))
    # validate() checked --sampler against its choices ("mixed", "fixed").
    sampler_mode = cast(SamplerMode, options.sampler)
    sampler = TaskSampler(SamplerConfig(
        sizes={t: len(ds) for t, ds in train_sets.items()}, batch_size=options.batch_size,
        tissue_batch_size=options.tissue_batch_size, mode=sampler_mode, tissue_prob=options.tissue_prob,
        task_probs=options.task_probs, seed=options.seed, item_probs=data.item_probs))
    patch = PatchConfig(options.patch, options.tissue_patch, foreground_types_only=subtype_head is not None)
    augment = (AugmentConfig(scale=options.scale_augment, stain=options.stain_augment,
                             blur_p=options.blur_augment)
               if options.augment else AugmentConfig.none())
    builder = BatchBuilder(train_sets, sampler, patch, augment, steps)

    anchor = _anchor(options, model, init).to(device) if options.tune_deepest else None
    params = _trainable(model, subtype_head, options.freeze_encoder, options.tune_deepest)
    optimizer = torch.optim.Adam(params, lr=options.lr)
    scaler = torch.amp.GradScaler("cuda") if options.amp and device.type == "cuda" else None
    sched = schedule(options)
    task = _TrainTask(options, model, optimizer, scaler, device, run, sched, init, data, subtype_head, anchor)
    loop = TrainingLoop(run, sched, task, options.seed, on_step=progress)
    start = loop.begin(point.state if point is not None else None,
                       {"options": options.to_dict(), "model": cfg.to_dict(), "tasks": tasks,
                        "data": {t: ds.describe() for t, ds in train_sets.items()},
                        "val_data": {t: ds.describe() for t, ds in val_sets.items()}},
                       seed_rngs=True)
    task.batches = iter(batch_loader(builder, start, options.workers))
    result = loop.run_steps()

    speeds = {k: sampler.batch_size(k) * len(v) / sum(v) for k, v in task.timing.items() if sum(v) > 0}
    run.log({"kind": "summary", "step": options.steps,
             **{f"samples_per_s_{k}": v for k, v in speeds.items()}})
    run.write_csv()
    _plot(run)
    return TrainResult(run.path, steps, run.last, run.best if run.best.is_file() else None,
                       result.best_score, result.best_metrics, task.losses, speeds)


def _plot(run: RunDir) -> None:
    losses: dict[str, list[tuple[float, float]]] = {}
    metrics: dict[str, list[tuple[float, float]]] = {}
    for r in run.records():
        target = losses if r.get("kind") == "train" else metrics if r.get("kind") == "val" else None
        if target is None:
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and k not in ("step", "lr", "score") and (
                    k.startswith("loss_") or target is metrics):
                target.setdefault(k.removeprefix("loss_"), []).append((r["step"], float(v)))
    # The image writer picks the format by extension: the temporary name keeps ".png".
    try:
        write_file(run.plot, lambda tmp: plot_run(losses, metrics, tmp), keep_suffix=True)
    except CerberusError as exc:  # the plot only shows what metrics.jsonl holds
        log.warning("no plot: %s", exc)
