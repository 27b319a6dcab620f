"""The grammar of the run-control flags: ``--devices`` lists, ``--ray`` addresses, ``--shard I/N``.

Pure parsing, without CUDA, Ray or the environment, so that the options object of
``cerberus segment`` can check these flags when it is built; what they mean (which
devices exist, which slides a shard holds) is decided by the runner
(``cerberus_cli.cohort``).
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


def is_slurm_shard(text: str) -> bool:
    """True for ``--shard slurm`` (the shard is read from the Slurm array variables)."""
    return text.strip().lower() == "slurm"


def parse_shard_spec(text: str) -> tuple[int, int]:
    """``(I, N)`` of ``--shard I/N``, with ``1 <= I <= N``."""
    index, sep, count = text.strip().lower().partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise InputError(f"--shard must be I/N (e.g. 1/4) or 'slurm', got {text!r}")
    if not 1 <= int(index) <= int(count):
        raise InputError(f"--shard {text}: I must lie in 1..N (shards are numbered from 1)")
    return int(index), int(count)
