"""What a bug report needs to know about this machine: versions, devices, slide readers,
and whether the output folder can take a run. Returns data; nothing here prints."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerberus_cli.cohort.run_record import versions
from cerberus_cli.core.errors import first_line
from cerberus_cli.core.optionspec import opt


@dataclass(frozen=True)
class DoctorOptions:
    """Options of ``cerberus doctor`` (and :func:`doctor`)."""

    out: str | None = opt(None, "Output folder to check: free space and write access.",
                          flag="--out", short="-o", metavar="OUT")


def doctor(options: DoctorOptions | None = None) -> dict[str, Any]:
    """The report: ``versions``, ``torch``, ``cuda`` (one entry per device), ``slides``
    (reader libraries), ``cpu`` and, with ``out``, ``output``; ``problems`` lists what
    would stop a run."""
    from cerberus_cli import __version__

    options = options or DoctorOptions()
    report: dict[str, Any] = {"cerberus": __version__, "python": sys.version.split()[0],
                              "platform": platform.platform(), "versions": versions(),
                              "cpu": _cpu(), "problems": []}
    report["torch"], report["cuda"] = _torch()
    report["slides"] = _slide_readers()
    if options.out is not None:
        report["output"] = output_check(Path(options.out))
        if report["output"]["problem"]:
            report["problems"].append(report["output"]["problem"])
    if not report["slides"]["openslide_library"] and not report["slides"]["tiffslide"]:
        report["problems"].append("no slide reader: neither the OpenSlide library nor tiffslide "
                                  "can be loaded")
    return report


def _cpu() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"count": os.cpu_count(), "usable": usable}


def _torch() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        import torch
    except ImportError:
        return {"version": None}, []
    info: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.version.cuda else None,
                            "threads": torch.get_num_threads(),
                            "cuda_available": torch.cuda.is_available()}
    devices = []
    if info["cuda_available"]:
        info["driver"] = _driver_version()
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            entry: dict[str, Any] = {"device": f"cuda:{index}", "name": props.name,
                                     "capability": f"{props.major}.{props.minor}",
                                     "total_mib": props.total_memory // 2**20}
            try:
                free, _ = torch.cuda.mem_get_info(index)
                entry["free_mib"] = free // 2**20
            except RuntimeError as exc:  # a device held exclusively by another process
                entry["free_mib"] = None
                entry["error"] = first_line(exc)
            devices.append(entry)
    return info, devices


def _driver_version() -> str | None:
    try:
        import torch

        return str(torch.cuda.driver_version()) if hasattr(torch.cuda, "driver_version") else None
    except (RuntimeError, AttributeError):
        return None


def _slide_readers() -> dict[str, Any]:
    out: dict[str, Any] = {"openslide_python": None, "openslide_library": None, "tiffslide": None}
    try:
        import openslide

        out["openslide_python"] = openslide.__version__
        out["openslide_library"] = getattr(openslide, "__library_version__", None)
    except (ImportError, OSError) as exc:  # OSError: the shared library is missing
        out["openslide_error"] = first_line(exc)
    try:
        import tiffslide

        out["tiffslide"] = tiffslide.__version__
    except ImportError:
        pass
    return out


def output_check(folder: Path) -> dict[str, Any]:
    """Free space and write access of ``folder`` (or of the folder that would hold it)."""
    folder = folder.expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    result: dict[str, Any] = {"path": str(folder.resolve()), "exists": folder.is_dir(),
                              "free_gib": None, "writable": False, "problem": None}
    if folder.exists() and not folder.is_dir():
        result["problem"] = f"{folder}: exists and is not a folder"
        return result
    try:
        result["free_gib"] = round(shutil.disk_usage(existing).free / 2**30, 2)
    except OSError as exc:
        result["problem"] = f"{existing}: {exc.strerror or exc}"
        return result
    if folder.is_dir():
        # Create and remove a file, as a run does: os.access misses read-only mounts and ACLs.
        probe = folder / f".cerberus-doctor.{secrets.token_hex(4)}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            probe.unlink()
            result["writable"] = True
        except OSError as exc:
            result["problem"] = f"{folder}: cannot write ({exc.strerror or exc})"
    else:
        result["writable"] = os.access(existing, os.W_OK | os.X_OK)
        if not result["writable"]:
            result["problem"] = f"{folder}: cannot be created in {existing}"
    return result
