"""Several devices on one host: one worker process per device, slides from a shared queue.

``--devices cuda:0,cuda:1`` (``all``: every CUDA device; ``cpu,cpu``: CPU workers)
starts one process per entry with the ``spawn`` start method; the parent never
initialises CUDA (``all`` is counted through NVML). Each worker loads the model once
and has its own tile readers and post-processing pool; it asks the parent for a
slide whenever it is free, so a fast device takes more slides. Every slide goes
through the same claim, commit record and status file as in a one-process run
(:class:`~cerberus_cli.cohort.slide_worker.SlideWorker`), and the parent turns the
workers' messages into one stream of :class:`~cerberus_cli.cohort.outcomes.RunEvents`
and one :class:`~cerberus_cli.cohort.outcomes.RunSummary`.

Each worker talks to the parent over its own pipe (no lock shared between workers,
so a worker killed mid-message harms no other). A worker that dies mid-slide
(``kill -9``, the OOM killer, a crash in a slide decoder) leaves no half-written
slide: the parent takes over its dead claim, finishes or drops an interrupted swap,
removes its staging folder, marks the slide ``failed`` in the summary and its status
file (the exit status is 1) and does not retry it in this run: a slide that kills
one worker would likely kill the next. A new worker is started in its place; a
device whose worker dies twice without finishing a slide is given up. The next run
retries the failed slide. SIGINT/SIGTERM stop every worker after the slide at hand
is dropped cleanly (as in a one-process run), then the run exits 130/143.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerberus_cli.cohort.outcomes import RunEvents, SlideOutcome
from cerberus_cli.cohort.slide_worker import SlideWorker, settle_dead_worker
from cerberus_cli.core.errors import Terminated, first_line
from cerberus_cli.core.processes import deferred_stop, die_with_parent, raise_if_stopped

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput
    from cerberus_cli.inference.options import SegmentOptions

log = logging.getLogger(__name__)

#: Deaths in a row (no slide finished in between) after which a device is given up.
MAX_DEATHS = 2
#: Seconds workers get to drop their slide after SIGTERM before they are killed.
STOP_GRACE_S = 60.0

#: A slide for a worker: (its index in the run, the slide, its provenance).
Task = tuple[int, "SlideInput", dict[str, Any]]


# --- the worker process ---------------------------------------------------------------------

class _PipeEvents(RunEvents):
    """The worker's side of :class:`RunEvents`: each event goes to the parent."""

    def __init__(self, conn: Connection, key: int) -> None:
        self.conn = conn
        self.key = key

    def run_started(self, slides: int) -> None:
        pass

    def slide_started(self, slide: SlideInput) -> None:
        self.conn.send(("started", self.key))

    def tiles(self, done: int, total: int, objects: int) -> None:
        self.conn.send(("tiles", self.key, done, total, objects))

    def slide_tiles(self, slide: SlideInput, done: int, total: int, objects: int) -> None:
        self.tiles(done, total, objects)

    def slide_finished(self, outcome: SlideOutcome) -> None:
        pass  # the worker sends the outcome itself


def serve(slot: int, device: str, out: str, options: SegmentOptions, model_sha256: str,
          conn: Connection, log_level: int, threads: int = 0) -> None:
    """A worker: load the model on ``device``, then segment slides until told to stop.

    Messages to the parent: ``("ready",)`` (send a task or None), ``("started", key)``,
    ``("tiles", key, done, total, objects)``, ``("finished", key, outcome)`` and
    ``("error", message)`` when the worker cannot start. ``threads`` (CPU workers):
    torch threads, so that CPU workers share the cores instead of each taking all.
    """
    die_with_parent()
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s: [{device}] %(message)s",
                        force=True)
    logging.getLogger("cerberus_cli").setLevel(log_level)
    # Signals are held for the whole life of the worker and act only where stopping is
    # safe (between network batches, between slides): never in the middle of a message.
    # The parent answers "ready" at once, so a worker never waits long for a task.
    try:
        with deferred_stop():
            _serve(device, Path(out), options, model_sha256, conn)
    except (KeyboardInterrupt, Terminated):
        pass  # stopped (a slide at hand was dropped and reported)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone


def _serve(device: str, out: Path, options: SegmentOptions, model_sha256: str,
           conn: Connection) -> None:
    try:
        worker = SlideWorker(out, options, device, model_sha256)
    except Exception as exc:
        conn.send(("error", first_line(exc)))
        return
    with worker:
        while True:
            raise_if_stopped()
            conn.send(("ready",))
            task = conn.recv()
            if task is None:
                return
            key, item, provenance = task
            try:
                outcome = worker.run(item, provenance, _PipeEvents(conn, key))
            except (KeyboardInterrupt, Terminated):
                conn.send(("finished", key, SlideOutcome(
                    str(item.path), "interrupted", "stopped by a signal; nothing of this slide was kept")))
                raise
            conn.send(("finished", key, outcome))


# --- the parent -----------------------------------------------------------------------------

@dataclass
class _Worker:
    slot: int
    device: str
    proc: Any
    conn: Connection
    task: Task | None = None
    started: bool = False  # the worker began its task (claimed it and reported "started")
    deaths: int = 0  # in a row, no slide finished in between
    error: str | None = None  # why it could not start
    exited: bool = False
    sent_stop: bool = False


class DevicePool:
    """Runs tasks on one worker process per device; see the module docstring."""

    def __init__(self, devices: list[str], out: Path, options: SegmentOptions, model_sha256: str,
                 events: RunEvents, report: Callable[[SlideOutcome], None]) -> None:
        self.devices = devices
        self.out = out
        self.options = options
        self.model_sha256 = model_sha256
        self.events = events
        self.report = report
        self.ctx = get_context("spawn")
        self.log_level = logging.getLogger("cerberus_cli").getEffectiveLevel()
        self.pending: deque[Task] = deque()
        self.workers: list[_Worker] = []
        self.stopping = False  # --fail-fast: no new slides

    def _start(self, slot: int, deaths: int = 0) -> _Worker:
        ours, theirs = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=serve, name=f"cerberus-{self.devices[slot]}",
            args=(slot, self.devices[slot], str(self.out), self.options, self.model_sha256, theirs,
                  self.log_level, self._threads(self.devices[slot])))
        proc.start()
        theirs.close()  # the child holds its end: EOF here once it exits
        log.info("worker %d on %s started (pid %d)", slot, self.devices[slot], proc.pid)
        return _Worker(slot, self.devices[slot], proc, ours, deaths=deaths)

    def _threads(self, device: str) -> int:
        """Torch threads of a CPU worker: the usable cores shared among the CPU workers."""
        if device != "cpu":
            return 0
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, usable // self.devices.count("cpu"))

    def run(self, tasks: list[Task]) -> None:
        """Segment every task; outcomes go to ``report``. Interrupts stop all workers first."""
        self.pending.extend(tasks)
        with deferred_stop():
            try:
                self.workers = [self._start(i) for i in range(min(len(self.devices), len(tasks)))]
                self._loop()
            except (KeyboardInterrupt, Terminated):
                self._stop_all()
                raise
            finally:
                self._reap()

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if not w.exited]

    def _loop(self) -> None:
        while self._live():
            live = self._live()
            ready = wait([w.conn for w in live] + [w.proc.sentinel for w in live], timeout=0.5)
            raise_if_stopped()  # a signal arrived: stop here, where nothing is half done
            for w in live:
                if w.conn in ready:
                    self._drain(w)
                if w.proc.sentinel in ready and not w.proc.is_alive():
                    self._ended(w)
        if self.stopping:  # --fail-fast: the rest is not run (as in a one-process run)
            self.pending.clear()
        for task in self.pending:  # every device was given up
            _, item, _ = task
            self.report(self._outcome(item, "failed", "no device worker left to run it: "
                                      + (self._last_error() or "every worker died")))
        self.pending.clear()

    def _last_error(self) -> str:
        errors = [f"{w.device}: {w.error}" for w in self.workers if w.error]
        return errors[-1] if errors else ""

    def _drain(self, w: _Worker) -> None:
        """Handle every message the worker has sent so far."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                self._handle(w, msg)
        except (EOFError, OSError):
            pass  # the worker is gone; its sentinel says so
        except Exception as exc:  # half a message from a worker killed while sending it
            log.debug("worker on %s: unreadable message (%s)", w.device, exc)

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ready":
            task = None if self.stopping or not self.pending else self.pending.popleft()
            w.task, w.started = task, False
            w.sent_stop = task is None
            try:
                w.conn.send(task)
            except OSError:
                pass  # died meanwhile: the task goes back (see _ended)
        elif kind == "started" and w.task is not None:
            w.started = True
            self.events.slide_started(w.task[1])
        elif kind == "tiles" and w.task is not None:
            self.events.slide_tiles(w.task[1], *msg[2:])
        elif kind == "finished":
            outcome = msg[2]
            w.task, w.started, w.deaths = None, False, 0
            self.report(outcome)
            if outcome.status == "failed" and self.options.fail_fast:
                self.stopping = True
        elif kind == "error":
            w.error = msg[1]
            log.error("worker on %s could not start: %s", w.device, msg[1])

    def _ended(self, w: _Worker) -> None:
        """The worker's process is gone: settle its slide, start another worker if useful."""
        self._drain(w)
        w.proc.join()
        w.exited = True
        w.conn.close()
        code = w.proc.exitcode
        if w.task is None and (w.sent_stop or w.error):
            return  # stopped when told to (or could not start)
        how = signal.Signals(-code).name if code is not None and code < 0 \
            else f"exit status {code}"
        who = f"worker {w.slot} on {w.device} (pid {w.proc.pid})"
        log.error("%s died (%s)", who, how)
        if w.task is not None:
            key, item, provenance = w.task
            if w.started:
                self.report(self._settle(item, provenance, w.proc.pid, f"{who} died ({how})"))
            else:
                self.pending.appendleft(w.task)  # never begun: another worker takes it
        deaths = w.deaths + 1
        if deaths >= MAX_DEATHS:
            w.error = w.error or f"died {deaths} times in a row ({how})"
            log.error("giving up %s: its worker died %d times in a row", w.device, deaths)
            return
        if self.pending and not self.stopping:
            self.workers.append(self._start(w.slot, deaths))

    def _settle(self, item: SlideInput, provenance: dict[str, Any], pid: int, why: str) -> SlideOutcome:
        return settle_dead_worker(self.out, item, provenance, self.options, self.model_sha256, pid, why)

    @staticmethod
    def _outcome(item: SlideInput, status: Any, message: str) -> SlideOutcome:
        return SlideOutcome(str(item.path), status, message)

    def _stop_all(self) -> None:
        """SIGTERM every worker, collect the slides they drop, kill those that do not stop."""
        self.stopping = True
        for w in self._live():
            try:
                os.kill(w.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while self._live() and time.monotonic() < deadline:
            live = self._live()
            ready = wait([w.conn for w in live] + [w.proc.sentinel for w in live], timeout=0.5)
            for w in live:
                if w.conn in ready:
                    self._drain(w)
                if w.proc.sentinel in ready and not w.proc.is_alive():
                    self._drain(w)
                    w.proc.join()
                    w.exited = True
                    self._interrupted(w, "ended without reporting it")
        for w in self._live():
            w.proc.kill()
            w.proc.join()
            w.exited = True
            self._interrupted(w, f"killed after {STOP_GRACE_S:.0f} s")

    def _interrupted(self, w: _Worker, why: str) -> None:
        """Report the slide a stopping worker left without an outcome (its folder made whole)."""
        if w.task is None:
            return
        _, item, provenance = w.task
        w.task = None
        if w.started:
            outcome = self._settle(item, provenance, w.proc.pid, f"stopped by a signal; its worker {why}")
        else:
            outcome = self._outcome(item, "interrupted", "stopped by a signal before it began")
        outcome.status = "interrupted"
        self.report(outcome)

    def _reap(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join()
            try:
                w.conn.close()
            except OSError:
                pass


def run_on_devices(devices: list[str], tasks: list[Task], out: Path, options: SegmentOptions,
                   model_sha256: str, events: RunEvents, report: Callable[[SlideOutcome], None]) -> None:
    """Segment ``tasks`` with one worker per device (see the module docstring)."""
    DevicePool(devices, out, options, model_sha256, events, report).run(tasks)
