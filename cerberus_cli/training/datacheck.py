"""Every training and validation item checked once, before the first step.

A bad image or label map found only when the sampler draws it stops a run hours in,
with a traceback from a DataLoader worker. :func:`check_datasets` reads each item
the run will use as training reads it (:meth:`TaskDataset.problem`), logs one line
per unusable item naming its file, and raises one :class:`InputError` that sums them
up. Items are read by a few threads: decoders release the GIL, and threads share
the datasets' memory-mapped arrays instead of copying them into processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import TaskDataset

log = logging.getLogger(__name__)


def _problems(ds: TaskDataset, threads: int) -> list[str]:
    if threads <= 1:
        found = [ds.problem(i) for i in range(len(ds))]
    else:
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(ds.problem, range(len(ds))))
    return [p for p in found if p is not None]


def check_datasets(datasets: Iterable[TaskDataset], threads: int = 1) -> int:
    """Check every item of ``datasets``; return how many were checked.

    Raises:
        InputError: some items cannot be used; each is logged on its own line first.
    """
    start = time.perf_counter()
    total, bad = 0, []
    for ds in datasets:
        total += len(ds)
        bad.extend(_problems(ds, threads))
    for line in bad:
        log.error("%s", line)
    if bad:
        first = bad[0].split(": ", 1)[0]
        raise InputError(f"{len(bad)} of {total} training items cannot be used (each listed above; "
                         f"first: {first}); fix or remove them")
    log.info("checked %d training items in %.1f s", total, time.perf_counter() - start)
    return total
