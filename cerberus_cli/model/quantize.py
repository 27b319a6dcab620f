"""int8 CPU inference: static post-training quantisation of the network's convolutions.

PyTorch's FX graph-mode quantisation (x86 backend: fbgemm/oneDNN kernels) turns the
encoder, every decoder level and each output head's hidden 1x1 layer into int8
modules; activations are quantised per tensor with ranges observed on a few
calibration batches (phantom H&E tiles by default), weights per channel. What stays
in float: the bilinear upsampling and skip additions between decoder levels, the 1x1
bridge, each head's last 1x1 layer (the logits: quantising them would round away the
margins the argmax decides on) and the tissue head. Conv, batch-norm and ReLU are
fused before quantisation, so batch-norm folding comes with it.

The result is approximate: ``tests/test_cpu_inference.py`` holds the per-pixel
argmax agreement of the segmentation maps with the float network at >= 99 % (the
coarse tissue-type map, a few hundred cells per tile, at >= 97 %), and
benchmarks/segment.md records both on a full-size phantom slide.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import nn

#: Quantised kernels' backend on x86 CPUs.
BACKEND = "x86"


def _quantisable_parts(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every submodule of a CerberusNet that is quantised."""
    parts: list[tuple[nn.Module, str]] = [(model, "encoder")]
    decoders = cast(nn.ModuleDict, getattr(model, "decoders", nn.ModuleDict()))
    for levels in decoders.values():
        parts += [(levels, str(i)) for i in range(len(cast(nn.ModuleList, levels)))]
    heads = cast(nn.ModuleDict, getattr(model, "heads", nn.ModuleDict()))
    for head in heads.values():
        parts.append((head, "0"))  # the hidden 1x1 conv -> BN -> ReLU; the logits stay float
    return parts


@torch.no_grad()
def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor],
                  **forward_kwargs: Any) -> nn.Module:
    """An int8 copy of a float CerberusNet for CPU inference (``model`` is unchanged).

    ``calibration``: a few (B, 3, H, W) uint8 batches like those to be segmented; the
    activation ranges are observed on them (one forward pass each). The copy takes
    and returns what the float network does.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = BACKEND
    qmodel = copy.deepcopy(model).eval().float()
    mapping = get_default_qconfig_mapping(BACKEND)
    batches = list(calibration)
    if not batches:
        raise ValueError("int8 quantisation needs at least one calibration batch")
    example = batches[0][:1]
    inputs: dict[int, tuple[torch.Tensor, ...]] = {}
    parts = _quantisable_parts(qmodel)

    # Example inputs of every part, as the whole network feeds them.
    def grab(key: int):
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs.setdefault(key, tuple(a.detach() for a in args))
        return hook

    handles = [getattr(p, a).register_forward_pre_hook(grab(i)) for i, (p, a) in enumerate(parts)]
    try:
        qmodel(example, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantisation's deprecation notices
        for i, (parent, attr) in enumerate(parts):
            if i in inputs:
                setattr(parent, attr, prepare_fx(getattr(parent, attr), mapping, inputs[i]))
        for batch in batches:
            qmodel(batch, **forward_kwargs)
        for i, (parent, attr) in enumerate(parts):
            if i in inputs:
                setattr(parent, attr, convert_fx(getattr(parent, attr)))
    return qmodel.eval()
