"""Shards: a deterministic part of a run's inputs, for job arrays and several machines.

Slide ``S`` (its output name, the file name without extension) belongs to shard
``1 + int(sha256(S)[:8 bytes]) mod N`` of ``N``. The assignment depends only on the
name and ``N``: not on the order of the inputs, the folder a host mounts them under,
or which other slides are listed, so a rerun (or a run with slides added) gives every
slide the shard it had. The union of the ``N`` shards is the whole input, without
overlap; shard sizes are balanced on average (hash, not round robin).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.run_flags import is_slurm_shard, parse_shard_spec

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def holds(self, key: str) -> bool:
        """True when the slide named ``key`` belongs to this shard."""
        return shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) of the slide named ``key``."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """``I/N`` (1 <= I <= N) or ``slurm`` (read from ``env``, default the process environment)."""
    if is_slurm_shard(text):
        return slurm_shard(os.environ if env is None else env)
    return Shard(*parse_shard_spec(text))


def slurm_shard(env: Mapping[str, str]) -> Shard:
    """This array task's shard: its position in the array range, of the array's size.

    ``--array=0-9`` and ``--array=1-10`` both give shards 1/10..10/10; a step
    (``--array=0-18:2``) is allowed; a list of task ids (``--array=1,5,7``) is not,
    since its positions cannot be told from the environment.
    """
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
    except KeyError:
        raise InputError("--shard slurm: SLURM_ARRAY_TASK_ID is not set "
                         "(not in a Slurm job array; use --shard I/N)") from None
    except ValueError:
        raise InputError("--shard slurm: SLURM_ARRAY_TASK_ID is not a number") from None
    low = _int(env, "SLURM_ARRAY_TASK_MIN", None) or 0
    step = max(_int(env, "SLURM_ARRAY_TASK_STEP", None) or 1, 1)
    high = _int(env, "SLURM_ARRAY_TASK_MAX", None)
    count = _int(env, "SLURM_ARRAY_TASK_COUNT", None)
    if count is None:
        if high is None:
            raise InputError("--shard slurm: neither SLURM_ARRAY_TASK_COUNT nor "
                             "SLURM_ARRAY_TASK_MAX is set")
        count = (high - low) // step + 1
    offset = task - low
    if offset < 0 or offset % step or offset // step >= count:
        raise InputError(f"--shard slurm: task {task} is not in the range {low}.. step {step} of "
                         f"{count} tasks; use a contiguous --array range (e.g. 0-9)")
    return Shard(offset // step + 1, count)


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--shard slurm: {name}={value!r} is not a number") from None


def select(items: Iterable[T], shard: Shard, key: Callable[[T], str]) -> list[T]:
    """The items of ``shard``, in their given order."""
    return [item for item in items if shard.holds(key(item))]
