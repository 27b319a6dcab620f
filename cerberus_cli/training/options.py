"""The options of a training run, in one typed dataclass shared by CLI and library."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerberus_cli.core.errors import InputError

DEFAULT_STEPS = 20000


@dataclass(frozen=True)
class DataSpec:
    """One dataset: its task, path and (optionally) named format."""

    task: str
    path: str
    format: str | None = None

    @staticmethod
    def parse(text: str) -> list["DataSpec"]:
        """Parse ``TASK[:FORMAT]=PATH``; a bare ``PATH`` is a phantom root (all its tasks)."""
        from cerberus_cli.core.vocabulary import TASKS

        if "=" not in text:
            from cerberus_cli.training.formats.phantom import looks_like, tasks_in

            root = Path(text)
            if not looks_like(root):
                raise InputError(f"{text}: give data as TASK=PATH (a bare path must be a "
                                 "'cerberus synth tiles' folder)")
            return [DataSpec(t, str(root), "phantom") for t in tasks_in(root)]
        key, path = text.split("=", 1)
        task, _, fmt = key.partition(":")
        if task not in TASKS:
            raise InputError(f"--data {text}: unknown task {task!r} (choose from {', '.join(TASKS)})")
        return [DataSpec(task, path, fmt or None)]


@dataclass
class TrainOptions:
    """Everything a training run needs. ``cerberus train`` fills this from its flags.

    Attributes mirror the CLI options; see ``cerberus train --help``.
    """

    output: str
    data: list[DataSpec] = field(default_factory=list)
    val_data: list[DataSpec] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)     # task (or "*") -> split file
    val_fraction: float = 0.1
    tissue_map: str | None = None
    tasks: list[str] | None = None                            # default: tasks with data
    arch: Literal["reference", "light"] = "reference"
    init: str = "random"                                     # random | imagenet | MODEL
    imagenet_weights: str | None = None
    subtype: Literal["nuclei", "gland", "tissue"] | None = None
    freeze_encoder: bool = False                              # train decoders and heads only
    tune_deepest: bool = False                                # tissue stage: also layer4 + bridge, anchored
    anchor_weight: float = 10.0                               # weight of the anchor loss (tune_deepest)
    steps: int | None = None                                 # None: DEFAULT_STEPS (or the resumed run's)
    batch_size: int = 8
    tissue_batch_size: int | None = None                      # None: batch_size
    lr: float = 1e-3
    lr_drop_at: int | None = None                             # default: 80% of steps
    lr_drop_to: float = 1e-4
    sampler: Literal["mixed", "fixed"] = "mixed"
    tissue_prob: float = 0.3
    tissue_bn: Literal["update", "keep"] = "update"           # encoder BN statistics on tissue batches
    task_probs: dict[str, float] = field(default_factory=dict)
    patch: int = 448
    tissue_patch: int = 144
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    workers: int = 2
    threads: int | None = None
    val_every: int = 1000
    val_limit: int = 32
    checkpoint_every: int = 500
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raise InputError for inconsistent options (before any work starts)."""
        if self.steps is None or self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.tissue_bn not in ("update", "keep"):
            raise InputError(f"--tissue-bn must be update or keep, got {self.tissue_bn!r}")
        if self.tissue_batch_size is not None and self.tissue_batch_size < 1:
            raise InputError(f"--tissue-batch-size must be at least 1, got {self.tissue_batch_size}")
        if self.lr <= 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.patch % 16 or self.patch < 64:
            raise InputError(f"--patch must be a multiple of 16 and at least 64, got {self.patch}")
        if self.tissue_patch % 16 or self.tissue_patch < 32:
            raise InputError(f"--tissue-patch must be a multiple of 16 and at least 32, got {self.tissue_patch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.init == "imagenet" and not self.imagenet_weights:
            raise InputError("--init imagenet needs --imagenet-weights FILE (torchvision ResNet state dict)")
        if self.subtype is not None and self.subtype not in ("nuclei", "gland", "tissue"):
            raise InputError(f"--subtype must be nuclei, gland or tissue, got {self.subtype!r}")
        if self.tune_deepest and self.subtype != "tissue":
            raise InputError("--tune-deepest goes with --subtype tissue")
        if self.anchor_weight <= 0:
            raise InputError(f"--anchor-weight must be positive, got {self.anchor_weight}")
        if not self.data and not self.resume:
            raise InputError("no training data: give --data TASK=PATH (or a synth tiles folder)")
