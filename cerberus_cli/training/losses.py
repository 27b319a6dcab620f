"""Per-task losses, each masked to the samples of its task.

Instance heads: cross-entropy weighted by the U-Net weight map. Type heads:
cross-entropy + soft Dice over the pixels whose type is known (IGNORE excluded).
Tissue head: plain cross-entropy. A head whose task has no sample in the batch gets
no loss term at all, so its decoder receives no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cerberus_cli.core.vocabulary import TISSUE
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.training.type_codes import IGNORE, SET_FLAG, membership_table


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (B, C, H, W) vs (B, H, W) averaged with per-pixel weights."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp_min(1e-6)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in target or prediction, on valid pixels."""
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = denom > 1e-3
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


def set_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean -log P(class in the pixel's set) over pixels with a known type or class set.

    For a plain class id this is the cross-entropy; for a coarse label (a set code of
    :mod:`cerberus_cli.training.type_codes`) the summed probability of its members is
    maximised, so no member is taught over another.
    """
    table = torch.from_numpy(membership_table(logits.shape[1])).to(logits.device)
    allowed = table[target].permute(0, 3, 1, 2)  # (B, C, H, W)
    logp = logits.float().log_softmax(dim=1)
    set_logp = logp.masked_fill(~allowed, float("-inf")).logsumexp(dim=1)
    valid = target != IGNORE
    return -set_logp[valid].mean()


def type_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """CE + Dice on pixels with a known type; ``None`` when there are none.

    Pixels labelled with a class set (a coarse label) join the cross-entropy as the
    log of the set's summed probability and are left out of the Dice term, which
    needs one class per pixel.
    """
    if not (target != IGNORE).any():
        return None
    coarse = (target >= SET_FLAG) & (target != IGNORE)
    if not coarse.any():
        ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
        return ce + soft_dice_loss(logits, target)
    fine = target.masked_fill(coarse, IGNORE)
    dice = soft_dice_loss(logits, fine) if (fine != IGNORE).any() else logits.sum() * 0.0
    return set_nll(logits, target) + dice


def task_losses(outputs: dict[str, torch.Tensor], batch: dict, config: ModelConfig,
                heads: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Loss per head for one batch, each over the samples of its own task only.

    ``heads`` restricts which heads get a loss (the subtyping stage trains a type
    head alone); by default every head whose task is in the batch does.
    """
    losses: dict[str, torch.Tensor] = {}
    want = (lambda h: True) if heads is None else (lambda h: h in heads)
    if batch["super_task"] == TISSUE:
        name = config.heads_of_kind("tissue")[0].name
        if want(name):
            losses[name] = F.cross_entropy(outputs[name].float(), batch["label"])
        return losses
    tasks = batch["task"]
    for task in dict.fromkeys(tasks):
        mask = torch.tensor([t == task for t in tasks], device=batch["inst"].device)
        if want(task) and task in outputs:
            losses[task] = weighted_ce(outputs[task][mask], batch["inst"][mask], batch["weight"][mask])
        type_head = config.type_head_for(task)
        if type_head is not None and want(type_head.name) and type_head.name in outputs:
            loss = type_loss(outputs[type_head.name][mask], batch["type"][mask])
            if loss is not None:
                losses[type_head.name] = loss
    return losses
