"""Patch-classification heads on encoder levels, and applying one densely over slides.

A head (made by :func:`make_head`) reads globally average-pooled encoder levels:
``linear`` reads layer4 (Mormont et al.); ``cerberus`` reads layer2, layer3 and layer4
concatenated through two fully connected layers (256 hidden units, ReLU, dropout 0.3),
as the Cerberus paper's patch classifier on several encoder levels. Every head starts
with :class:`Standardise` (per-feature mean and std fitted on training features, kept as
buffers), because pooled features of a trained encoder have very uneven scales.

``cerberus finetune`` stores such a head beside an encoder-only model (checkpoint key
``classifier``). :func:`attach_classifier` turns that model into one whose tissue-kind
head is the classifier slid over every ``patch_px`` window (:class:`DenseClassifier`),
so ``cerberus segment`` writes its class map exactly as it writes the tissue map, with
the classifier's class names.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cerberus_cli.core.errors import CheckpointError
from cerberus_cli.core.vocabulary import ClassSpec
from cerberus_cli.model.checkpoint import LoadedModel
from cerberus_cli.model.config import HeadSpec
from cerberus_cli.model.encoder_protocol import FeatureEncoder
from cerberus_cli.model.resnet import BASIC_CHANNELS

#: Encoder levels (indices into the trunk's five maps) each head reads.
HEAD_LEVELS = {"linear": (4,), "cerberus": (2, 3, 4)}
#: Key of the classifier in a checkpoint written by ``cerberus finetune``.
CLASSIFIER_KEY = "classifier"
#: Display colours of classifier classes, in class order (cycled).
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


class Standardise(nn.Module):
    """``(x - mean) / std`` over the last dimension, with fitted (not trained) statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, feats: torch.Tensor) -> None:
        """Take the mean and standard deviation of ``feats`` (N, dim). Spreads are floored
        at a tenth of the mean spread: a near-constant feature must not be amplified
        without bound once the encoder trains and moves it (full fine-tuning)."""
        self.mean.copy_(feats.mean(0))
        std = feats.std(0) if len(feats) > 1 else torch.ones_like(self.std)
        floor = max(0.1 * float(std.mean()), 1e-6)
        self.std.copy_(std.clamp_min(floor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def head_dim(kind: str, channels: tuple[int, ...] = BASIC_CHANNELS) -> int:
    """Width of the pooled features a head of ``kind`` reads."""
    return sum(channels[i] for i in HEAD_LEVELS[kind])


def make_head(kind: str, classes: int, channels: tuple[int, ...] = BASIC_CHANNELS) -> nn.Sequential:
    """A fresh head of ``kind`` for ``classes`` classes (``channels``: of the trunk's maps)."""
    dim = head_dim(kind, channels)
    if kind == "linear":
        return nn.Sequential(Standardise(dim), nn.Linear(dim, classes))
    return nn.Sequential(Standardise(dim), nn.Linear(dim, 256), nn.ReLU(inplace=True),
                         nn.Dropout(0.3), nn.Linear(256, classes))


class DenseClassifier(nn.Module):
    """A patch head slid over the encoder maps with the interface of the tissue head.

    ``dense(layer4)`` gives logits (B, C, h, w): cell (i, j) classifies the window of
    ``crop`` x ``crop`` layer4 cells starting at (i, j) (the same pixels at every level
    the head reads), pooled as in training. Shallower levels come from forward hooks on
    the encoder, filled by the same forward pass.
    """

    def __init__(self, kind: str, head: nn.Module, crop: int, encoder: FeatureEncoder) -> None:
        super().__init__()
        self.kind, self.head, self.crop = kind, head, crop
        self._maps: dict[int, torch.Tensor] = {}
        #: Cells of each level per cell of the deepest one.
        self._ratio = [encoder.strides[-1] // s for s in encoder.strides]
        for level in HEAD_LEVELS[kind]:
            if level < 4:
                # Levels are named after the submodules that produce them (ResNet: layerN).
                getattr(encoder, encoder.levels[level]).register_forward_hook(self._keeper(level))

    def _keeper(self, level: int) -> Any:
        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._maps[level] = output
        return keep

    def _pooled(self, layer4: torch.Tensor, k: int, stride: int) -> torch.Tensor:
        parts = []
        for level in HEAD_LEVELS[self.kind]:
            f = layer4 if level == 4 else self._maps.pop(level)
            r = self._ratio[level]
            parts.append(F.avg_pool2d(f, k * r, stride=r * stride))
        return torch.cat(parts, dim=1)

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def dense(self, layer4: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, h, w) of every crop-sized window (stride one layer4 cell)."""
        k = min(self.crop, *layer4.shape[-2:])
        return self._classify(self._pooled(layer4, k, 1))

    def forward(self, layer4: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of the whole input (global pooling, as in training)."""
        maps = [layer4 if level == 4 else self._maps.pop(level) for level in HEAD_LEVELS[self.kind]]
        return self.head(torch.cat([f.mean(dim=(2, 3)) for f in maps], dim=1))


def class_specs(names: list[str]) -> tuple[ClassSpec, ...]:
    """Classes of a classifier with display colours."""
    return tuple(ClassSpec(str(n), PALETTE[i % len(PALETTE)]) for i, n in enumerate(names))


def read_classifier(path: str) -> dict[str, Any] | None:
    """The ``classifier`` entry of a checkpoint file, or None when it has none."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the model loader already read this file
        return None
    entry = obj.get(CLASSIFIER_KEY) if isinstance(obj, dict) else None
    return entry if isinstance(entry, dict) else None


def attach_classifier(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its fine-tuned classifier as its tissue-kind head, or unchanged
    when its file holds no classifier.

    Raises:
        CheckpointError: the classifier cannot be applied (a model that already has a
            tissue head, an encoder fed other than RGB/255, a malformed entry).
    """
    entry = read_classifier(loaded.source) if loaded.source else None
    if entry is None:
        return loaded
    src = loaded.source
    try:
        kind, classes = str(entry["kind"]), [str(c) for c in entry["classes"]]
        state, task = entry["state_dict"], str(entry.get("task", "classifier"))
        patch_px = int(entry.get("patch_px", loaded.config.tissue_patch_px))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{src}: malformed classifier entry ({exc})") from None
    if kind not in HEAD_LEVELS:
        raise CheckpointError(f"{src}: unknown classifier kind {kind!r}")
    if entry.get("normalisation", "rgb/255") != "rgb/255":
        raise CheckpointError(f"{src}: the classifier's encoder expects {entry['normalisation']} "
                              "input; segment feeds RGB/255 (fine-tune a Cerberus encoder)")
    if loaded.config.heads_of_kind("tissue"):
        raise CheckpointError(f"{src}: the model has a tissue head and a classifier; one map only")
    net = loaded.model
    head = make_head(kind, len(classes), net.encoder.channels)
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{src}: classifier weights do not fit a {kind} head "
                              f"({str(exc).splitlines()[0]})") from None
    name = task if task not in {h.name for h in loaded.config.heads} else f"{task}_class"
    config = replace(loaded.config, heads=(*loaded.config.heads, HeadSpec(name, "tissue", class_specs(classes))),
                     tissue_patch_px=patch_px)
    net.config = config
    net.tissue_head = DenseClassifier(kind, head.eval(), config.tissue_crop, net.encoder)  # type: ignore[assignment]
    net.tissue_name = name
    return replace(loaded, config=config)
