"""Batch-norm folded into the convolution that feeds it, for inference.

In eval mode a BatchNorm2d is a per-channel affine map, ``y = (x - mean) * s + beta``
with ``s = gamma / sqrt(var + eps)``; when ``x`` is a convolution's output the map
folds into that convolution (``W' = W * s``, ``b' = (b - mean) * s + beta``) and the
batch-norm layer, one whole pass over its activations, disappears. The result is the
same network up to float rounding.

Which convolution feeds which batch-norm layer is observed, not assumed from module
names: one forward pass on a small input records every convolution's output tensor,
and a batch-norm layer whose input is exactly such a tensor is folded into it. Layers
fed by anything else (the tissue head's first batch-norm follows a pooling) stay.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


@torch.no_grad()
def conv_bn_pairs(model: nn.Module, example: torch.Tensor, **forward_kwargs: object
                  ) -> list[tuple[str, str]]:
    """(convolution, batch-norm) module names where the batch-norm reads the conv's output.

    Found by running ``model(example, **forward_kwargs)`` once (eval mode). A
    convolution whose output also goes elsewhere is not paired: folding would change
    that other use.
    """
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    readers: dict[str, set[str]] = {}
    pairs: dict[str, str] = {}

    def conv_hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        outputs[id(out)] = (names[module], out)

    def bn_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        hit = outputs.get(id(x))
        if hit is not None and hit[1] is x:
            readers.setdefault(hit[0], set()).add(names[module])
            pairs[names[module]] = hit[0]
        else:
            pairs[names[module]] = ""

    def any_hook(module: nn.Module, inputs: tuple[object, ...]) -> None:
        # Any other module reading a conv output is a second reader.
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or list(module.children()):
            return
        for x in inputs:
            hit = outputs.get(id(x))
            if hit is not None and hit[1] is x:
                readers.setdefault(hit[0], set()).add(names[module])

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_hook))
        else:
            handles.append(m.register_forward_pre_hook(any_hook))
    was_training = model.training
    model.eval()
    try:
        model(example, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    used = {conv for conv in pairs.values() if conv}
    return [(conv, bn) for bn, conv in pairs.items()
            if conv and readers.get(conv) == {bn} and conv in used
            and list(pairs.values()).count(conv) == 1]


@torch.no_grad()
def fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into ``conv`` in place (computed in float64)."""
    w = conv.weight.detach().double()
    mean = bn.running_mean.detach().double() if bn.running_mean is not None else \
        torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    var = bn.running_var.detach().double() if bn.running_var is not None else \
        torch.ones(w.shape[0], dtype=torch.float64, device=w.device)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (w.dim() - 1)
    conv.weight.copy_((w * scale.reshape(shape)).to(conv.weight.dtype))
    new_bias = ((bias - mean) * scale + beta).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=False)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, **forward_kwargs: object
                   ) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every conv-fed batch-norm folded away.

    ``example`` is a small input the forward pass accepts (only which layer feeds
    which matters). The copy's outputs on ``example`` are checked against the
    original's; should they differ beyond float rounding (a conv output read outside
    any module, which no hook sees), the unfolded copy is returned. Returns the copy
    and the number of batch-norm layers folded; ``model`` itself is left unchanged.
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded, example, **forward_kwargs)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        fold_into(conv, bn)
        parent, child = _parent(folded, bn_name)
        setattr(parent, child, nn.Identity())
    if pairs and not _same_outputs(model, folded, example, forward_kwargs):
        log.warning("batch-norm folding changed the network's outputs; running unfolded")
        return copy.deepcopy(model).eval(), 0
    return folded, len(pairs)


@torch.no_grad()
def _same_outputs(a: nn.Module, b: nn.Module, example: torch.Tensor,
                  forward_kwargs: dict[str, object]) -> bool:
    was_training = a.training
    a.eval()
    try:
        out_a, out_b = a(example, **forward_kwargs), b(example, **forward_kwargs)
    finally:
        a.train(was_training)
    flat_a = out_a.values() if isinstance(out_a, dict) else [out_a]
    flat_b = out_b.values() if isinstance(out_b, dict) else [out_b]
    for x, y in zip(flat_a, flat_b):
        x, y = x.float(), y.float()
        tol = 1e-3 * max(1.0, float(x.abs().max()))
        if x.shape != y.shape or float((x - y).abs().max()) > tol:
            return False
    return True
