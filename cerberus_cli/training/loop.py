"""The one training loop of ``cerberus train``, ``pretrain`` and ``finetune``.

What the three commands share lives here: the learning-rate schedule, which steps are
logged, validated and checkpointed, the run folder's metrics (``metrics.jsonl``,
``metrics.csv``), the best validation score, the checkpoint with the whole training
state and the resume from it, and progress. A command supplies a :class:`LoopTask`:
its step, the fields of its training record, its validation and what its checkpoints
hold. A step is what the command counts: an optimisation step for ``train`` and
``pretrain``, an epoch for ``finetune``.

Resuming is bit for bit when a command's steps are pure functions of (seed, step) and
of the state the checkpoint holds: the loop restores the optimizer, the AMP scaler,
every global RNG and ``metrics.jsonl`` as they were at the checkpoint
(:mod:`cerberus_cli.training.run_checkpoints`), and which steps are logged, validated
and checkpointed depends on the step alone.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cerberus_cli.core.errors import CheckpointError, first_line
from cerberus_cli.training.run_checkpoints import TrainState, capture_rng, restore_rng, seed_all
from cerberus_cli.training.rundir import RunDir

log = logging.getLogger(__name__)

#: ``(steps done, total steps, loss of the last step)``; NaN before the first step.
StepProgress = Callable[[int, int, float], None]
#: ``(steps done, total steps, record)``: after each record written to metrics.jsonl.
RecordProgress = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class Schedule:
    """How long a run is, its learning rate, and at which steps it logs, validates and
    checkpoints (each a function of the step alone, so a resumed run does as an
    uninterrupted one)."""

    steps: int
    lr: float
    log_every: int
    val_every: int
    checkpoint_every: int
    #: From this step on the learning rate is ``min(lr, drop_to)``; None: constant.
    drop_at: int | None = None
    drop_to: float | None = None
    #: Also log the first step (a first loss at once, whatever ``log_every`` is).
    log_first: bool = False

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        if self.drop_at is None or self.drop_to is None or step < self.drop_at:
            return self.lr
        return min(self.lr, self.drop_to)

    def logs(self, done: int) -> bool:
        return done % self.log_every == 0 or done == self.steps or (self.log_first and done == 1)

    def validates(self, done: int) -> bool:
        return done % self.val_every == 0 or done == self.steps

    def checkpoints(self, done: int) -> bool:
        return done % self.checkpoint_every == 0 or done == self.steps


@dataclass
class Validation:
    """One validation: the fields of its ``val`` record and its score (higher is better)."""

    record: dict[str, Any]
    score: float
    #: What the run keeps as ``best_metrics`` when this is its best validation.
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LoopResult:
    """Where a loop started and the best validation of the whole run."""

    start: int
    best_score: float
    best_metrics: dict[str, float]


class LoopTask(ABC):
    """What one command supplies to :class:`TrainingLoop`: ``step``, ``record`` and
    ``save_last`` always; the other hooks as it needs them."""

    #: The optimizer whose learning rates the schedule sets and whose state is saved.
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    @abstractmethod
    def step(self, step: int) -> float:
        """Run step ``step`` (counted from 0); return its loss."""
        raise NotImplementedError

    @abstractmethod
    def record(self, done: int) -> dict[str, Any]:
        """The fields of the ``train`` record logged after ``done`` steps."""
        raise NotImplementedError

    def validate(self, done: int) -> Validation | None:
        """Validate after ``done`` steps; None: nothing to validate on."""
        return None

    def better(self, v: Validation, best_score: float, best_metrics: dict[str, float]) -> bool:
        """Whether ``v`` beats the best validation so far."""
        return v.score > best_score

    def save_best(self, done: int, v: Validation) -> None:
        """Save the weights of the best validation so far (``best.pt``)."""
        return None

    @abstractmethod
    def save_last(self, done: int, state: TrainState, v: Validation | None) -> None:
        """Write ``last.pt``: the weights and ``state`` (``v``: this step's validation)."""
        raise NotImplementedError

    def checkpointed(self, done: int) -> None:
        """After each checkpoint (and metrics.csv) is written, e.g. to redraw a plot."""
        return None


class TrainingLoop:
    """Runs a :class:`LoopTask` to ``schedule.steps`` in ``run``, from step 0 or a checkpoint."""

    def __init__(self, run: RunDir, schedule: Schedule, task: LoopTask, seed: int,
                 on_step: StepProgress | None = None, on_record: RecordProgress | None = None) -> None:
        self.run = run
        self.schedule = schedule
        self.task = task
        self.seed = seed
        self.on_step = on_step
        self.on_record = on_record
        self.start = 0
        self.best_score = -math.inf
        self.best_metrics: dict[str, float] = {}
        # The schedule scales each parameter group's own learning rate.
        self._lr_scales = [g["lr"] / schedule.lr for g in task.optimizer.param_groups]

    def begin(self, state: TrainState | None, config: dict[str, Any] | None = None,
              seed_rngs: bool = False) -> int:
        """Start the run: from ``state`` (a resume) or from step 0, writing ``config``.

        A resume restores the optimizer, the AMP scaler, ``metrics.jsonl`` as it was at
        the checkpoint and, last, the global RNGs. A fresh start creates the run folder
        and, with ``seed_rngs``, seeds the global RNGs (a command that drew its initial
        weights from them after seeding them itself leaves them as they are). Returns
        the first step to run.
        """
        if state is None:
            self.run.create(config or {})
            if seed_rngs:
                seed_all(self.seed)
            return 0
        try:
            self.task.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{self.run.last}: optimizer state does not fit the model: "
                                  f"{first_line(exc)}") from None
        if self.task.scaler is not None and state.scaler:
            self.task.scaler.load_state_dict(state.scaler)
        self.start, self.best_score, self.best_metrics = state.step, state.best_score, dict(state.best_metrics)
        self.run.remove_stale()
        self.run.restore_metrics(state.metrics, self.start)
        self.run.write_csv()
        restore_rng(state.rng)
        log.info("resuming %s at step %d of %d", self.run.path, self.start, self.schedule.steps)
        return self.start

    def run_steps(self) -> LoopResult:
        """Run every step from where :meth:`begin` left to the end of the schedule."""
        sched, task, steps = self.schedule, self.task, self.schedule.steps
        if self.on_step is not None:
            self.on_step(self.start, steps, math.nan)
        for step in range(self.start, steps):
            if sched.drop_at is not None:
                lr = sched.lr_at(step)
                for group, scale in zip(task.optimizer.param_groups, self._lr_scales):
                    group["lr"] = lr * scale
            loss = task.step(step)
            done = step + 1
            # The first step after a resume is shown, not recorded: metrics.jsonl stays an
            # uninterrupted run's.
            if sched.logs(done):
                self._record({"kind": "train", "step": done, **task.record(done)}, done)
            elif done == self.start + 1:
                log.info("step %d/%d: loss %.4f", done, steps, loss)
            if self.on_step is not None:
                self.on_step(done, steps, loss)
            v = task.validate(done) if sched.validates(done) else None
            if v is not None:
                self._record({"kind": "val", "step": done, **v.record}, done)
                if task.better(v, self.best_score, self.best_metrics):
                    self.best_score, self.best_metrics = v.score, dict(v.metrics)
                    task.save_best(done, v)
            if sched.checkpoints(done):
                task.save_last(done, self._state(done), v)
                self.run.write_csv()
                task.checkpointed(done)
        return LoopResult(self.start, self.best_score, self.best_metrics)

    def _record(self, record: dict[str, Any], done: int) -> None:
        self.run.log(record)
        log.info("%s at step %d/%d: %s", record["kind"], done, self.schedule.steps, _describe(record))
        if self.on_record is not None:
            self.on_record(done, self.schedule.steps, record)

    def _state(self, done: int) -> TrainState:
        scaler = self.task.scaler
        return TrainState(step=done, optimizer=self.task.optimizer.state_dict(),
                          scaler=scaler.state_dict() if scaler is not None else None,
                          lr=self.schedule.lr_at(done), rng=capture_rng(),
                          loader={"next_step": done, "seed": self.seed},
                          metrics=self.run.metrics_mark(), best_score=float(self.best_score),
                          best_metrics={k: float(v) for k, v in self.best_metrics.items()})


def _describe(record: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in sorted(record.items()) if k not in ("kind", "step"))
