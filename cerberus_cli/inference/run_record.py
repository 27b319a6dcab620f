"""The per-slide run record: what went in, what came out, how long it took."""

from __future__ import annotations

import datetime as _dt
import platform
import resource
import sys
from importlib import metadata
from typing import Any

_PACKAGES = ("cerberus-cli", "torch", "numpy", "scipy", "scikit-image", "opencv-python-headless",
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


def peak_memory() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its finished children, and
    peak CUDA memory when a GPU was used."""
    to_mib = 1 / 1024  # ru_maxrss is KiB on Linux
    out = {
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib,
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib,
    }
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def build_record(**sections: Any) -> dict[str, Any]:
    """A run record with the standard sections plus ``sections``."""
    from cerberus_cli.inference.commit import RECORD_FORMAT, RECORD_VERSION

    return {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "finished": utc_now(),
            "versions": versions(), "peak_memory": peak_memory(), **sections}
