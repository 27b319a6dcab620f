"""The per-slide run record: what went in, what came out, how long it took."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata
from typing import Any

from cerberus_cli.cohort.commit import RECORD_FORMAT, RECORD_VERSION
from cerberus_cli.core.processes import peak_rss_mib

_PACKAGES = ("cerberus-pathology", "torch", "numpy", "scipy", "scikit-image", "opencv-python-headless",
             "openslide-python", "openslide-bin", "tiffslide", "tifffile", "zarr", "shapely",
             "geopandas", "pyarrow")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def peak_memory(postprocess_worker_rss_mib: float | None = None) -> dict[str, float]:
    """Peak memory (MiB) per process kind: the main process's resident memory, the largest
    a post-processing worker reported (when they ran in workers) and peak CUDA memory
    (when a GPU was used). Workers measure themselves: ``RUSAGE_CHILDREN`` would count
    only children that have ended, and pool workers live on. Figures are peaks since
    each process started (workers serve every slide of a run)."""
    out = {"main_rss_mib": peak_rss_mib()}
    if postprocess_worker_rss_mib is not None:
        out["postprocess_worker_rss_mib"] = postprocess_worker_rss_mib
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build_record(postprocess_worker_rss_mib: float | None = None,
                 **sections: Any) -> dict[str, Any]:
    """A run record with the standard sections plus ``sections``; the worker figure
    goes into ``peak_memory`` (see :func:`peak_memory`)."""
    return {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "finished": utc_now(),
            "versions": versions(), "peak_memory": peak_memory(postprocess_worker_rss_mib),
            **sections}
