"""The options of a training run, in one typed dataclass shared by CLI and library."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.optionspec import check_options, device_opt, opt

DEFAULT_STEPS = 20000


@dataclass(frozen=True)
class DataSpec:
    """One dataset: its task, path, (optionally) named format and sampling weight.

    ``weight`` is the source's share of its task's samples relative to the task's other
    sources (a source without one weighs 1 when any source of the task has one); when
    no source of a task is weighted, every item of the task is equally likely.
    """

    task: str
    path: str
    format: str | None = None
    weight: float | None = None

    @staticmethod
    def parse(text: str) -> list[DataSpec]:
        """Parse ``TASK[:FORMAT][@WEIGHT]=PATH``; a bare ``PATH`` is a phantom root (all its tasks)."""
        from cerberus_cli.core.vocabulary import TASKS

        if "=" not in text:
            from cerberus_cli.training.formats.phantom import looks_like, tasks_in

            root = Path(text)
            if not looks_like(root):
                raise InputError(f"{text}: give data as TASK=PATH (a bare path must be a "
                                 "'cerberus synth tiles' folder)")
            return [DataSpec(t, str(root), "phantom") for t in tasks_in(root)]
        key, path = text.split("=", 1)
        key, at, weight_text = key.partition("@")
        task, _, fmt = key.partition(":")
        if task not in TASKS:
            raise InputError(f"--data {text}: unknown task {task!r} (choose from {', '.join(TASKS)})")
        weight = None
        if at:
            try:
                weight = float(weight_text)
            except ValueError:
                weight = -1.0
            if not weight > 0 or weight == float("inf"):
                raise InputError(f"--data {text}: the weight after '@' must be a positive number")
        return [DataSpec(task, path, fmt or None, weight)]


def _data(values: tuple[str, ...]) -> list[DataSpec]:
    return [spec for text in values for spec in DataSpec.parse(text)]


def _splits(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        task, sep, path = v.partition("=")
        out.update({task: path} if sep else {"*": v})
    return out


def _class_maps(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        path, sep, spec = v.rpartition("=")
        if not sep or not path or not spec:
            raise InputError(f"--class-map {v}: expected DATA_PATH=FILE|PRESET")
        out[path] = spec
    return out


def _task_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _task_probs(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        key, sep, val = part.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--task-probs: expected NAME=NUMBER[,NAME=NUMBER...], got {part!r}")
    return out


_FORMATS = "lizard, conic, pannuke, generic, glas, crag, class-folders, phantom"


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs; ``cerberus train``'s flags are generated from it."""

    output: str = opt("", "Run directory (config, metrics, checkpoints, plot).", flag="--output",
                      short="-o", cli=False)
    data: list[DataSpec] = opt(help="Training data for a task (gland, lumen, nuclei, tissue); the "
                               f"format ({_FORMATS}) is detected unless named; @WEIGHT sets the "
                               "source's share of its task's samples (default: by item count). A "
                               "bare PATH is a 'cerberus synth tiles' folder. Repeatable.", factory=list,
                               multiple=True, parse=_data, metavar="TASK[:FORMAT][@WEIGHT]=PATH")
    val_data: list[DataSpec] = opt(help="Held-out validation data (default: --val-fraction of the "
                                   "training data).", factory=list, multiple=True, parse=_data,
                                   metavar="TASK[:FORMAT]=PATH")
    splits: dict[str, str] = opt(help="Split file of 'key,split' rows (key: image name or patient "
                                 "id; split: train, val, test).", factory=dict, flag="--split",
                                 multiple=True, parse=_splits, metavar="[TASK=]FILE")
    val_fraction: float = opt(0.1, "Held-out fraction (by patient where known).")
    tissue_map: str | None = opt(None, "Class mapping file for tissue folders.")
    class_maps: dict[str, str] = opt(help="Map the type classes of the --data source at DATA_PATH onto "
                                     "the task's: a JSON file of source id -> class name, list of names "
                                     "(a coarse class: the loss maximises the set's summed probability) "
                                     "or null (type unknown), or a preset (consep: CoNSeP's 4 classes). "
                                     "Repeatable.", factory=dict, flag="--class-map", multiple=True,
                                     parse=_class_maps, metavar="DATA_PATH=FILE|PRESET")
    tasks: list[str] | None = opt(None, "Comma-separated tasks to train (default: those with --data).",
                                  parse=_task_list, metavar="TASK,...")
    arch: str = opt("reference", "reference: ResNet34, stem stride 1; light: ResNet18, stem stride 2.",
                    choices=("reference", "light"))
    init: str = opt("random", "Start from random weights, an ImageNet encoder, or a model (file or "
                    "registry name).", metavar="random|imagenet|MODEL")
    imagenet_weights: str | None = opt(None, "torchvision ResNet state dict file for --init imagenet.")
    subtype: str | None = opt(None, "Single-head stage: train only this task's type decoder (nuclei, "
                              "gland) or the tissue-type head (tissue), all else frozen.",
                              choices=("nuclei", "gland", "tissue"))
    freeze_encoder: bool = opt(False, "Keep the encoder (weights and batch-norm statistics) and the "
                               "bridge every decoder reads as --init has them; train the decoders "
                               "and heads of --tasks (the other tasks' outputs stay as they were).")
    tune_deepest: bool = opt(False, "With --subtype tissue: also train the encoder's deepest block "
                             "and the bridge, while an anchor loss on the segmentation patches of "
                             "--data keeps the bridge output (what every decoder reads) equal to "
                             "--init's, so segmentation stays as it was.")
    anchor_weight: float = opt(10.0, "Weight of the anchor loss (relative squared error of the "
                               "bridge output) with --tune-deepest.")
    steps: int | None = opt(None, f"Total optimisation steps [default: {DEFAULT_STEPS}; on --resume: "
                            "the run's].")
    batch_size: int = opt(8, "Samples per batch.")
    tissue_batch_size: int | None = opt(None, "Samples per tissue-type batch (default: --batch-size).")
    lr: float = opt(1e-3, "Adam learning rate.")
    lr_drop_at: int | None = opt(None, "Step at which the learning rate drops (default: 80% of --steps).")
    lr_drop_to: float = opt(1e-4, "Learning rate after the drop.")
    sampler: str = opt("mixed", "mixed: each sample draws its task; fixed: one task per batch.",
                       choices=("mixed", "fixed"))
    tissue_prob: float = opt(0.3, "Probability of a tissue-type batch.")
    tissue_bn: str = opt("update", "update: tissue batches move the encoder's batch-norm statistics; "
                         "keep: they use and keep those of the segmentation batches.",
                         choices=("update", "keep"))
    task_probs: dict[str, float] = opt(help="Task probabilities within segmentation batches.",
                                       factory=dict, parse=_task_probs, metavar="TASK=P,...")
    patch: int = opt(448, "Segmentation patch size (px).")
    tissue_patch: int = opt(144, "Tissue patch size (px).")
    augment: bool = opt(True, "Geometric and photometric augmentation.")
    stain_augment: float = opt(0.05, "Strength of the stain (HED) jitter: each stain's density scaled "
                               "and shifted by up to this fraction (Tellez et al. use 0.05 light, "
                               "0.2 strong; strong jitter helps on real scans of other labs).")
    scale_augment: float = opt(0.1, "Largest relative zoom of the affine augmentation (applied to half "
                               "the patches): 0.2 covers scanners whose true resolution is 20 % off.")
    blur_augment: float = opt(0.2, "Probability of a Gaussian blur (sigma up to 1 px) of a training "
                              "patch: higher makes the model steadier on soft-focus scans.")
    seed: int = opt(0, "Random seed.")
    device: str = device_opt()
    amp: bool = opt(False, "Mixed precision (fp16 on CUDA, bf16 on CPU).")
    workers: int = opt(2, "Data loading worker processes.")
    threads: int | None = opt(None, "torch CPU threads.")
    val_every: int = opt(1000, "Validate every this many steps.")
    val_limit: int = opt(32, "Validation items per task.")
    checkpoint_every: int = opt(500, "Write a checkpoint every this many steps.")
    log_every: int = opt(10, "Log metrics every this many steps.")
    resume: bool = opt(False, "Continue the run in --output from its last checkpoint.")
    overwrite: bool = opt(False, "Replace an existing run directory.")
    progress: bool = opt(True, "Show a progress bar.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raise InputError for inconsistent options (before any work starts)."""
        check_options(self)
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
        if not 0.0 <= self.stain_augment < 1.0:
            raise InputError(f"--stain-augment must be in [0, 1), got {self.stain_augment}")
        if not 0.0 <= self.scale_augment < 1.0:
            raise InputError(f"--scale-augment must be in [0, 1), got {self.scale_augment}")
        if not 0.0 <= self.blur_augment <= 1.0:
            raise InputError(f"--blur-augment must be in [0, 1], got {self.blur_augment}")
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
        known = {d.path for d in [*self.data, *self.val_data]}
        stray = [p for p in self.class_maps if p not in known]
        if stray:
            raise InputError(f"--class-map {stray[0]}: not the path of a --data or --val-data source")
        if not self.data and not self.resume:
            raise InputError("no training data: give --data TASK=PATH (or a synth tiles folder)")
