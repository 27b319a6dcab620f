"""Worker processes that never outlive the run that started them, interrupts that
arrive only where stopping is safe, a process's own peak memory, and who this process is (host, pid)."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cerberus_cli.core.errors import Terminated

_PR_SET_PDEATHSIG = 1


def host() -> str:
    """This machine's short host name, as temporary names, claims and records carry it."""
    return socket.gethostname().split(".")[0] or "localhost"


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def peak_rss_mib() -> float:
    """Peak resident memory of this process itself, MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` carries the
    parent's figure over fork and exec, so a spawned worker would report the size of
    the process that started it. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB else).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def die_with_parent(*_: Any) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Used as the initializer of post-processing pools and tile-loader workers, so a
    run killed with ``kill -9`` leaves no worker holding hundreds of MB behind.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


class _Stop:
    """A SIGINT/SIGTERM that arrived while stopping at once was not safe."""

    signum: int | None = None


def _record(signum: int, frame: Any) -> None:
    _Stop.signum = signum


def raise_if_stopped() -> None:
    """Raise the deferred interrupt (KeyboardInterrupt or Terminated), if one arrived."""
    signum, _Stop.signum = _Stop.signum, None
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        raise Terminated()


@contextmanager
def deferred_stop() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the next :func:`raise_if_stopped` (or the end of the block).

    Raising inside a blocking call lets background writers (e.g. zarr's I/O thread)
    finish after the caller cleaned up, so files reappear in a removed folder. Code
    that writes calls ``raise_if_stopped`` where stopping is safe. Outside the main
    thread signals cannot be handled, and this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    raise_if_stopped()
