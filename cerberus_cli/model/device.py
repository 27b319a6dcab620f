"""Device and numeric precision: one resolution of `--device` and `--precision` for every command."""

from __future__ import annotations

import contextlib
import logging
from typing import cast

import torch

from cerberus_cli.core.errors import InputError

log = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown device {spec!r} (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {spec!r} (auto, cpu, cuda or cuda:N)")
    return device


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32. ``auto``: fp16 on CUDA, fp32 on CPU."""
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else None
    if spec == "fp16" and device.type == "cpu":
        raise InputError("fp16 autocast is for CUDA; use --precision bf16 or fp32 on the CPU")
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU does not support bf16; use --precision fp16")
    return _DTYPES[spec]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``dtype`` on ``device`` (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare_model(
    model: torch.nn.Module, device: torch.device, channels_last: bool = True, compile: bool = False
) -> torch.nn.Module:
    """Move to ``device`` in eval mode, optionally channels-last and compiled."""
    model = model.to(device).eval()
    if channels_last:
        # torch's stubs lack Module.to's memory_format keyword
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        model = cast(torch.nn.Module, torch.compile(model, dynamic=False))
    return model
