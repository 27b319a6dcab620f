"""Where a run's slides are worked on: the checks of ``--devices`` and ``--ray``.

Parsed here without touching CUDA or Ray, so that the options object validates them
when it is built; :mod:`.devices` and :mod:`.ray_runner` do the work.
"""

from __future__ import annotations

import re

from cerberus_cli.core.errors import InputError

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-]+:\d+|(ray://)?\[[0-9A-Fa-f:.]+\]:\d+")


def parse_devices(spec: str) -> list[str] | None:
    """The devices of a ``--devices`` list (``cuda`` read as ``cuda:0``); None for ``all``."""
    text = spec.strip().lower()
    if text == "all":
        return None
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not _DEVICE.fullmatch(item):
            raise InputError(f"--devices: {item!r} is not a device (cpu, cuda or cuda:N; "
                             "or 'all' for every CUDA device)")
        out.append("cuda:0" if item == "cuda" else item)
    return out


def check_ray_address(address: str) -> None:
    """``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT`` (what ``ray.init`` takes)."""
    if address in ("auto", "local") or _RAY_ADDRESS.fullmatch(address):
        return
    raise InputError(f"--ray takes auto, local, HOST:PORT or ray://HOST:PORT, not {address!r} "
                     "(give --ray after the slides, or write --ray auto)")


def check_placement(devices: str | None, ray: str | None, device: str) -> None:
    """Validate ``--devices`` / ``--ray`` against each other and ``--device`` (no CUDA query)."""
    if devices is not None:
        parse_devices(devices)
        if device != "auto":
            raise InputError("--device and --devices exclude each other: list the devices in --devices")
    if ray is not None:
        check_ray_address(ray)
        if devices is not None:
            raise InputError("--devices and --ray exclude each other: Ray places one actor per GPU")
        if re.fullmatch(r"cuda:\d+", device):
            raise InputError(f"--device {device} with --ray: Ray gives each actor its GPU; "
                             "use --device cuda (or auto)")


def cuda_device_count() -> int:
    """CUDA devices on this host, counted without initialising CUDA in this process.

    ``torch.cuda.device_count`` asks NVML first; CUDA is initialised only in the
    workers, which are spawned (a forked CUDA context is unusable).
    """
    import torch

    return int(torch.cuda.device_count())


def resolve_devices(spec: str) -> list[str]:
    """The workers' devices of ``--devices``: ``all`` counted, CUDA indices checked."""
    parsed = parse_devices(spec)
    wants_cuda = parsed is None or any(d.startswith("cuda") for d in parsed)
    count = cuda_device_count() if wants_cuda else 0
    if parsed is None:
        if count == 0:
            raise InputError("--devices all: this machine has no CUDA device "
                             "(for CPU workers give --devices cpu,cpu)")
        return [f"cuda:{i}" for i in range(count)]
    for d in parsed:
        if d.startswith("cuda"):
            if count == 0:
                raise InputError(f"--devices {spec}: CUDA is not available on this machine")
            if int(d.split(":")[1]) >= count:
                raise InputError(f"--devices {spec}: {d} does not exist ({count} CUDA device(s))")
    return parsed
