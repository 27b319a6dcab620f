"""Claims: one runner at a time per slide, for runners that share an output folder.

Before a runner works on slide ``S`` it creates ``OUT/.S.claim`` with
``O_CREAT|O_EXCL`` (atomic on local file systems and on NFSv3+): the one runner
whose create succeeds holds the slide. The file holds host, pid, start, heartbeat
and the holder's timeout; a thread rewrites it (write aside, then rename, so readers
never see half a file) while the slide runs, and the holder removes it when done.

A claim is dead when its heartbeat is older than its timeout, or, on the same host,
when its process is gone (so a ``kill -9`` is taken over at once, and another host's
after ``--claim-timeout`` seconds). A dead claim is broken by renaming it to a
private name and checking that the moved file is the very one judged dead (same
inode and token); a live claim moved by mistake in a race is put back with
``os.link``, which never overwrites. The holder checks that the claim is still its
own before it commits, so a slide's outputs are never committed by two runners.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.processes import host, pid_alive

log = logging.getLogger(__name__)

CLAIM_FORMAT = "cerberus-cli/claim"
#: Default seconds without heartbeat after which another host's claim counts as dead.
DEFAULT_TIMEOUT = 600.0


def claim_path(folder: Path, stem: str) -> Path:
    return folder / f".{stem}.claim"


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a slide's claim, as read from its claim file."""

    host: str
    pid: int
    token: str
    start: float
    heartbeat: float
    timeout: float
    #: identity of the file read: (inode, token) tells a moved file from a new one
    inode: int = 0

    def alive(self, timeout: float | None = None) -> bool:
        """False when the heartbeat is older than ``timeout`` (default: the holder's own) or,
        on this host, the holder's process is gone."""
        if time.time() - self.heartbeat > (self.timeout if timeout is None else timeout):
            return False
        if self.host == host():
            return self.pid > 0 and pid_alive(self.pid)
        return True

    def describe(self) -> str:
        """E.g. ``node12 pid 4711 since 2025-01-31 12:00:00``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.start))
        who = f"{self.host} pid {self.pid}" if self.pid else "an unknown runner"
        return f"{who} since {since}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "inode"}


def read_claim(folder: Path, stem: str, timeout: float = DEFAULT_TIMEOUT) -> Holder | None:
    """The slide's claim, or None when there is none.

    A claim that cannot be parsed (its holder died between create and write) is
    judged by the file's age against ``timeout``.
    """
    path = claim_path(folder, stem)
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        data = json.loads(text)
        return Holder(host=str(data["host"]), pid=int(data["pid"]), token=str(data["token"]),
                      start=float(data["start"]), heartbeat=float(data["heartbeat"]),
                      timeout=float(data["timeout"]), inode=st.st_ino)
    except (ValueError, KeyError, TypeError):
        return Holder(host="?", pid=0, token="", start=st.st_mtime, heartbeat=st.st_mtime,
                      timeout=timeout, inode=st.st_ino)


class ClaimLost(Exception):
    """Another runner took this runner's claim (it stopped beating for too long)."""


class Claim:
    """A claim this process holds; use as a context manager to beat and release it."""

    def __init__(self, folder: Path, stem: str, timeout: float, token: str, start: float) -> None:
        self.folder = folder
        self.stem = stem
        self.path = claim_path(folder, stem)
        self.timeout = timeout
        self.token = token
        self.start = start
        # Beat several times per timeout, so one slow beat (a busy NFS server) is not death.
        self.interval = max(0.2, min(30.0, timeout / 4))
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def content(self, heartbeat: float) -> str:
        return json.dumps({"format": CLAIM_FORMAT, "host": host(), "pid": os.getpid(),
                           "token": self.token, "start": self.start, "heartbeat": heartbeat,
                           "timeout": self.timeout, "slide": self.stem})

    def owned(self) -> bool:
        """True while the claim file is still this claim."""
        current = read_claim(self.folder, self.stem, self.timeout)
        return current is not None and current.token == self.token

    def beat(self) -> bool:
        """Refresh the heartbeat; False (and ``lost`` set) when the claim is no longer ours."""
        if not self.owned():
            self.lost = True
            return False
        try:
            AtomicPath(self.path, overwrite=True).write_text(self.content(time.time()))
        except OSError as exc:  # a full or briefly unreachable disk: try again next beat
            log.warning("%s: heartbeat not written (%s)", self.path, exc.strerror or exc)
        return True

    def check(self) -> None:
        """Raise :class:`ClaimLost` unless the claim is still ours (called before committing)."""
        if self.lost or not self.owned():
            self.lost = True
            now = read_claim(self.folder, self.stem, self.timeout)
            raise ClaimLost(f"{self.stem}: claim taken over by "
                            f"{now.describe() if now else 'another runner'}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.beat():
                log.warning("%s: claim taken over by another runner", self.stem)
                return

    def __enter__(self) -> Claim:
        self._thread = threading.Thread(target=self._run, name=f"claim-{self.stem}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Stop beating and remove the claim file if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if not self.lost and self.owned():
            self.path.unlink(missing_ok=True)


def _create(folder: Path, stem: str, timeout: float) -> Claim | None:
    """Create the claim file exclusively; None when it exists."""
    path = claim_path(folder, stem)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    now = time.time()
    claim = Claim(folder, stem, timeout, secrets.token_hex(8), now)
    try:
        os.write(fd, claim.content(now).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return claim


def break_claim(folder: Path, stem: str, dead: Holder) -> None:
    """Remove the claim judged dead, and only that one (see the module docstring)."""
    path = claim_path(folder, stem)
    moved = folder / f".{stem}.claim.{host()}.{os.getpid()}.{secrets.token_hex(4)}.broken"
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return  # another runner broke it first
    try:
        same = moved.stat().st_ino == dead.inode and \
            (read_token(moved) == dead.token)
        if not same:
            try:
                os.link(moved, path)  # a live claim moved in a race: put it back
            except FileExistsError:
                pass  # its holder finds the claim gone and does not commit
    finally:
        moved.unlink(missing_ok=True)


def read_token(path: Path) -> str:
    try:
        return str(json.loads(path.read_text()).get("token", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def acquire(folder: Path, stem: str, timeout: float = DEFAULT_TIMEOUT) -> Claim | Holder:
    """Claim slide ``stem`` in ``folder``: our :class:`Claim`, or the live :class:`Holder`.

    A dead holder's claim is taken over (logged). The returned claim is not yet
    beating: use it as a context manager.
    """
    holder: Holder | None = None
    for _ in range(5):
        claim = _create(folder, stem, timeout)
        if claim is not None:
            if holder is not None:
                log.warning("%s: took over the claim of %s (no longer running)", stem,
                            holder.describe())
            return claim
        current = read_claim(folder, stem, timeout)
        if current is None:
            continue  # released between our create and read: try again
        if current.alive(timeout):  # the judging runner's --claim-timeout decides
            return current
        holder = current
        break_claim(folder, stem, current)
    current = read_claim(folder, stem, timeout)
    # Five lost races in a row: someone else is busy taking it over.
    return current or Holder("?", 0, "", time.time(), time.time(), timeout)


def remove_leftovers(folder: Path) -> list[str]:
    """Heartbeat and break temporaries of dead processes on this host."""
    removed = []
    me = host()
    for p in list(folder.glob(".*.claim.*.beat")) + list(folder.glob(".*.claim.*.broken")):
        parts = p.name.split(".claim.", 1)[-1].split(".")
        if len(parts) >= 3 and parts[0] == me and parts[1].isdigit() and not pid_alive(int(parts[1])):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
