"""Worker processes that never outlive the run that started them, interrupts that
arrive only where stopping is safe, a process's own peak memory, and who this process is (host, pid)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cerberus_cli.core.errors import Terminated

#: How often a worker checks that its parent is alive, s.
_WATCH_S = 0.5


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
    """Make this worker process exit when the process that started it dies.

    Used as the initializer of post-processing pools and tile-loader workers, so a
    run killed with ``kill -9`` leaves no worker holding hundreds of MB behind. A
    watchdog thread notices the worker being re-parented; ``prctl(PR_SET_PDEATHSIG)``
    is not used because it fires when the parent *thread* that started the worker
    ends, and pool workers are started from a slide's short-lived consumer thread:
    the pool would be killed after every slide.
    """
    parent = os.getppid()
    if parent == 1:  # orphaned before this ran
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_S)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


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
