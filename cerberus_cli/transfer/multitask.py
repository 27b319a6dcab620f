"""The multi-task network of Mormont et al.: one shared encoder, one linear head per task.

The encoder runs once per batch; each head (global average pooling, then a linear
layer) sees only its own task's samples. The loss is the per-sample cross-entropy
summed over the batch and divided by the batch size B, so a head's gradient is scaled
by |B_task| / B; :func:`rescale_head_grads` multiplies it by B / |B_task| so that a task
drawn rarely in a batch is not drowned. Heads of tasks absent from a batch get no
gradient at all (their ``grad`` stays None, so SGD leaves them and their momentum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cerberus_cli.model.encoder_protocol import FeatureEncoder


class MultiTaskNet(nn.Module):
    """An encoder and ``{task: Linear(C, classes)}`` heads on its pooled deepest level (C:
    512 for ResNet18/34, 2048 for ResNet50)."""

    def __init__(self, encoder: FeatureEncoder, classes: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({t: nn.Linear(encoder.channels[-1], k) for t, k in classes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled deepest features of uint8 RGB ``(B, 3, H, W)`` (RGB / 255 input,
        as every Cerberus model)."""
        return self.encoder(images.float() / 255.0)[-1].mean(dim=(2, 3))


def multitask_loss(heads: nn.ModuleDict, feats: torch.Tensor, task_ids: torch.Tensor,
                   labels: torch.Tensor, tasks: list[str]
                   ) -> tuple[torch.Tensor, dict[str, float], dict[str, int]]:
    """The batch loss (sum of per-sample CE / B), each present task's mean CE, and counts.

    ``task_ids`` index ``tasks``; ``labels`` are class indices within each sample's task.
    """
    batch = len(labels)
    total = feats.new_zeros(())
    losses: dict[str, float] = {}
    counts: dict[str, int] = {}
    for t, name in enumerate(tasks):
        mask = task_ids == t
        n = int(mask.sum())
        if n == 0:
            continue
        ce = F.cross_entropy(heads[name](feats[mask]), labels[mask], reduction="sum")
        total = total + ce
        losses[name] = float(ce.detach()) / n
        counts[name] = n
    return total / batch, losses, counts


def rescale_head_grads(heads: nn.ModuleDict, counts: dict[str, int], batch: int) -> None:
    """Multiply each present head's gradients by B / |B_task| (after ``backward``)."""
    for name, n in counts.items():
        for p in heads[name].parameters():
            if p.grad is not None:
                p.grad.mul_(batch / n)


def set_encoder_frozen(net: MultiTaskNet, frozen: bool) -> None:
    """Warm-up: a frozen encoder is in eval mode (BN statistics untouched) and takes no
    gradient; heads always train."""
    net.encoder.train(not frozen)
    for p in net.encoder.parameters():
        p.requires_grad_(not frozen)
    net.heads.train()
