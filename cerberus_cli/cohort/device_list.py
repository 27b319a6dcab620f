"""The workers' devices of ``--devices``: ``all`` counted, CUDA indices checked.

The list itself is parsed (and checked against ``--device`` and ``--ray``) when the
options are built (:mod:`cerberus_cli.core.run_flags`); here it meets the machine.
:mod:`.devices` then runs one worker per device.
"""

from __future__ import annotations

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.run_flags import parse_devices


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
