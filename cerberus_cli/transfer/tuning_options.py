"""The typed options of ``cerberus pretrain`` and ``cerberus finetune``."""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.optionspec import (
    check_mpp,
    check_nonnegative,
    check_options,
    check_positive,
    check_range,
    device_opt,
    opt,
    require,
)
from cerberus_cli.model.encoder import encoder_names

#: Encoders a random start may take: every registered one.
ARCHS = encoder_names()
HEADS = ("linear", "cerberus")
MODES = ("frozen", "full")


def _specs(values: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    from cerberus_cli.transfer.taskdata import parse_data_spec

    return tuple(parse_data_spec(v) for v in values)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class PretrainOptions:
    """Multi-task pre-training of one encoder over several patch-classification tasks."""

    data: tuple[tuple[str | None, str], ...] = opt(
        (), "A task's patch table or image-folder tree (TASK=PATH), or one table with a 'task' "
        "column (PATH); repeat for more tasks.", multiple=True, parse=_specs,
        metavar="[TASK=]PATH")
    init: str = opt("random", "Start from 'random' weights (--arch), a model (registry name or "
                    "checkpoint), a torchvision-layout ResNet18/34/50 state dict file or a "
                    "multitask-dipath release checkpoint (ResNet).")
    arch: str = opt("resnet18", "Encoder of a random start.", choices=ARCHS)
    stem_stride: int = opt(2, "Stem stride of a random start (the reference Cerberus model: 1).")
    mpp: float = opt(0.5, "um/px the encoder works at (patches are resampled to it).")
    image_mpp: float | None = opt(None, "um/px of table images without an 'mpp' column "
                                  "[default: --mpp].")
    patch_px: int = opt(224, "Patch side in px at --mpp (images are centre-cropped or padded).")
    steps: int = opt(50000, "Training iterations (Mormont et al.: 50k).")
    batch_size: int = opt(64, "Samples per batch, drawn task-balanced (task uniformly, then a sample).")
    lr: float = opt(0.001, "Learning rate of the encoder (SGD, momentum --momentum).")
    head_lr_mult: float = opt(1.0, "Learning-rate multiplier of the heads (paper: 1, 5 or 10).")
    momentum: float = opt(0.9, "SGD momentum.")
    weight_decay: float = opt(0.0, "SGD weight decay.")
    warmup: int = opt(5000, "First steps train only the heads, the encoder frozen in eval mode.")
    augment: bool = opt(True, "Random flips and 90-degree rotations.")
    val_every: int = opt(1000, "Validate every task on its val split every this many steps.")
    log_every: int = opt(50, "Log training losses every this many steps.")
    save_every: int = opt(1000, "Write checkpoints/last.pt every this many steps.")
    seed: int = opt(0, "Seed of the initial heads and of the batches (a pure function of seed "
                    "and step, so a resumed run is bit-exact).")
    group_regex: str | None = opt(None, "Image folders: group = first capture group of this regex.")
    allow_group_overlap: bool = opt(False, "Accept a group that appears in two splits.")
    device: str = device_opt()
    resume: bool = opt(False, "Continue the run in the output folder from checkpoints/last.pt.")
    overwrite: bool = opt(False, "Replace an existing run in the output folder.")

    def __post_init__(self) -> None:
        check_options(self)
        require(bool(self.data), "no training data: give --data TASK=TABLE_OR_FOLDER")
        require(self.stem_stride in (1, 2), "--stem-stride must be 1 or 2")
        check_mpp(self.mpp)
        if self.image_mpp is not None:
            check_mpp(self.image_mpp, "--image-mpp")
        check_range("patch_px", self.patch_px, 32, 2048)
        check_positive("steps", self.steps)
        check_range("batch_size", self.batch_size, 2, 100000)
        check_positive("lr", self.lr)
        check_positive("head_lr_mult", self.head_lr_mult)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_nonnegative("weight_decay", self.weight_decay)
        check_nonnegative("warmup", self.warmup)
        for name in ("val_every", "log_every", "save_every"):
            check_positive(name, getattr(self, name))
        require(not (self.resume and self.overwrite), "give --resume or --overwrite, not both")


@dataclass(frozen=True)
class FinetuneOptions:
    """A new classifier head on a transferred encoder, selected on the validation split."""

    model: str | None = opt(None, "Encoder: registry name, checkpoint (e.g. a 'cerberus pretrain' "
                            "run's checkpoints/best.pt) or torchvision-layout state dict "
                            "[default: the bundled model].")
    random_init: int | None = opt(None, "Baseline: the model's architecture with random weights "
                                  "drawn with this seed.", metavar="SEED")
    head: str = opt("linear", "New head: linear (GAP of layer4 + linear) or cerberus (GAP of "
                    "layer2-4 concatenated, FC 256, ReLU, dropout, FC).", choices=HEADS)
    mode: str = opt("frozen", "Train the head only (frozen encoder) or the whole network.",
                    choices=MODES)
    lr_grid: tuple[float, ...] = opt((0.01, 0.001), "Comma-separated learning rates; each seed "
                                     "keeps the one whose best epoch scores highest on val.",
                                     parse=_floats, metavar="LR1,LR2,...")
    epochs: int = opt(10, "Training epochs per learning rate.")
    warmup_epochs: int = opt(2, "Full mode: first epochs train only the head (encoder frozen); "
                             "without them a random head's gradients rewrite the encoder "
                             "before the head has learnt anything.")
    encoder_lr_mult: float = opt(0.1, "Full mode: learning rate of the encoder as a fraction "
                                 "of the head's (the learning-rate grid's value).")
    balanced_loss: bool = opt(True, "Weight the cross-entropy by inverse class frequency of "
                              "the training patches, so an imbalanced task does not learn its "
                              "majority class.")
    batch_size: int = opt(32, "Samples per batch.")
    momentum: float = opt(0.9, "SGD momentum.")
    weight_decay: float = opt(0.0, "SGD weight decay.")
    seeds: int = opt(1, "Repeats with seeds 0..N-1 (head init, batch order); test metrics are "
                     "averaged over seeds.")
    clip_grad: float = opt(1.0, "Clip the gradient norm of every step to this value (the "
                           "standardised head scales gradients into the encoder up).")
    bn_train: bool = opt(False, "Full mode: batch-norm layers use batch statistics while the "
                         "encoder trains (default: their running statistics stay fixed, "
                         "which small batches of a small target set need).")
    bn_adapt: int = opt(0, "Before training, re-estimate batch-norm statistics on this many "
                        "training batches (eval-mode outputs unchanged; 0: off).")
    patch_px: int = opt(224, "Patch side in px at the encoder's mpp.")
    image_mpp: float | None = opt(None, "um/px of table images without an 'mpp' column "
                                  "[default: the encoder's].")
    augment: bool = opt(True, "Random flips and 90-degree rotations of training patches.")
    bootstrap: int = opt(1000, "Bootstrap replicates over test groups for the intervals (0: none).")
    confidence: float = opt(0.95, "Level of the bootstrap intervals.")
    group_regex: str | None = opt(None, "Image folders: group = first capture group of this regex.")
    allow_group_overlap: bool = opt(False, "Accept a group that appears in two splits.")
    device: str = device_opt()
    resume: bool = opt(False, "Continue an interrupted fine-tuning from OUT.runs/ (the last "
                       "checkpoint of each seed and learning rate), bit for bit.")
    overwrite: bool = opt(False, "Replace an existing output folder's files (and the runs of "
                          "an interrupted fine-tuning).")

    def __post_init__(self) -> None:
        check_options(self)
        require(bool(self.lr_grid) and all(v > 0 for v in self.lr_grid),
                "--lr-grid: give positive learning rates")
        check_positive("epochs", self.epochs)
        check_nonnegative("warmup_epochs", self.warmup_epochs)
        check_positive("encoder_lr_mult", self.encoder_lr_mult)
        check_range("batch_size", self.batch_size, 2, 100000)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_nonnegative("weight_decay", self.weight_decay)
        check_range("seeds", self.seeds, 1, 100)
        check_nonnegative("bn_adapt", self.bn_adapt)
        check_positive("clip_grad", self.clip_grad)
        check_range("patch_px", self.patch_px, 32, 2048)
        if self.image_mpp is not None:
            check_mpp(self.image_mpp, "--image-mpp")
        check_range("bootstrap", self.bootstrap, 0, 100000)
        check_range("confidence", self.confidence, 0.5, 0.999)
        require(not (self.resume and self.overwrite), "give --resume or --overwrite, not both")
