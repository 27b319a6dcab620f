"""Batch-norm adaptation to a target data set (Mormont et al.).

Per-channel mean and variance of every BatchNorm2d input are re-estimated on a few
target batches with the network in eval mode, and the affine parameters are rescaled
so that eval-mode outputs do not change::

    gamma_t = gamma_s * sqrt(var_t + eps) / sqrt(var_s + eps)
    beta_t  = beta_s + gamma_s * (mu_t - mu_s) / sqrt(var_s + eps)

and the running statistics become the target ones. Because eval-mode outputs are
unchanged, every layer's input is the same as before, so one pass gathers all the
statistics. What changes is training-mode behaviour: batch statistics of target data
now match the running ones, so fine-tuning starts from a consistent network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def target_statistics(model: nn.Module, forward: Callable[[torch.Tensor], Any],
                      batches: Iterable[torch.Tensor]) -> dict[nn.BatchNorm2d, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm2d of ``model``: (mean, unbiased variance) of its input over ``batches``
    (``forward`` runs the model on a batch; the model is in eval mode meanwhile)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    acc: dict[nn.BatchNorm2d, list[Any]] = {bn: [0.0, 0.0, 0] for bn in bns}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
        entry = acc[module]  # type: ignore[index]
        entry[0] = entry[0] + x.sum(1)
        entry[1] = entry[1] + (x * x).sum(1)
        entry[2] += x.shape[1]

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for bn, (s, ss, n) in acc.items():
        if n < 2:
            continue
        mean = s / n
        var = (ss - n * mean * mean) / (n - 1)  # unbiased, as PyTorch keeps running_var
        out[bn] = (mean, var.clamp_min(0.0))
    return out


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, forward: Callable[[torch.Tensor], Any],
                    batches: Iterable[torch.Tensor]) -> int:
    """Adapt every BatchNorm2d of ``model`` to the target ``batches``; return how many."""
    stats = target_statistics(model, forward, batches)
    for bn, (mu_t, var_t) in stats.items():
        if bn.running_mean is None or bn.running_var is None:
            continue
        dtype = bn.running_mean.dtype
        mu_s, var_s = bn.running_mean.double(), bn.running_var.double()
        std_s, std_t = torch.sqrt(var_s + bn.eps), torch.sqrt(var_t + bn.eps)
        if bn.affine:
            gamma = bn.weight.double()
            bn.bias.copy_((bn.bias.double() + gamma * (mu_t - mu_s) / std_s).to(dtype))
            bn.weight.copy_((gamma * std_t / std_s).to(dtype))
        bn.running_mean.copy_(mu_t.to(dtype))
        bn.running_var.copy_(var_t.to(dtype))
    return len(stats)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, forward: Callable[[torch.Tensor], Any],
                         batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm2d's running statistics by those of the target ``batches``
    (AdaBN: the affine parameters are kept, so eval-mode outputs *do* change: this is the
    domain-shift fix for inference on a new scanner or stain; return how many layers).

    Layers are re-estimated together in one cumulative pass per batch, each seeing the
    inputs produced by the already-adapted layers before it (train-mode BN with
    ``momentum=None`` is a cumulative average), so the result does not depend on order.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    saved = {bn: bn.momentum for bn in bns}
    was_training = model.training
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    seen = 0
    try:
        for batch in batches:
            forward(batch)
            seen += 1
    finally:
        for bn, momentum in saved.items():
            bn.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError("batch-norm re-estimation needs at least one batch")
    return len(bns)
