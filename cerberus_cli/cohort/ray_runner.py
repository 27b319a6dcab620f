"""Slides on a Ray cluster: ``cerberus segment ... --ray [auto|ADDRESS]``.

One actor per GPU of the cluster (``num_gpus=1`` and ``--ray-cpus`` CPUs each), or,
when no GPU is asked for (``--device cpu``, or ``auto`` on a cluster without GPUs),
one actor per ``--ray-cpus`` CPUs: ``num_gpus`` is requested only for CUDA, since a
request no node can satisfy waits forever. How many actors fit is counted per node
from ``ray.nodes()``; none fitting is an error, not a hang. Each actor loads the model
once (:class:`~cerberus_cli.cohort.slide_worker.SlideWorker`) and is given one slide at a
time, as a path (slide handles cannot be pickled), so a fast actor takes more
slides. The driver never initialises CUDA; each actor sees only its own GPU.

Outputs are written by the actors straight into ``OUT`` on the shared file system,
through the same claims, staging folders and atomic renames as any runner, so Ray
runs, Slurm array tasks and plain runs may share one ``OUT``. Paths (slides, mask,
model file, ``OUT``) are made absolute before they are sent.

Failures: actors are created with ``max_restarts=-1`` and tasks with
``max_task_retries`` (:data:`TASK_RETRIES`). An actor that dies mid-slide is
restarted (the model is loaded again) and the slide is retried; the retry takes over
the claim its dead attempt left at once, on any host: a small ledger actor knows
every (host, pid) of this run's actors, and a claim held by one of them on the slide
a task was just given can only be a dead attempt. The dead attempt's staging folder
is removed; the final outputs are those of one whole attempt. A slide still failing
after the retries is reported failed (exit status 1).

Ctrl-C/SIGTERM in the driver cancels the slides in flight (each actor drops its
slide at the next network batch, as a one-process run does), waits for them, then
kills the actors. Ray is imported only here, and only when ``--ray`` is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerberus_cli.cohort.outcomes import RunEvents, SlideOutcome
from cerberus_cli.cohort.slide_worker import SlideWorker
from cerberus_cli.core.errors import InputError, Terminated, first_line
from cerberus_cli.core.processes import deferred_stop, host, raise_if_stopped

if TYPE_CHECKING:
    from cerberus_cli.cohort.claims import Holder
    from cerberus_cli.cohort.inputs import SlideInput
    from cerberus_cli.inference.options import SegmentOptions

log = logging.getLogger(__name__)

RAY_EXTRA = 'pip install "cerberus-pathology[ray]"'
#: Attempts after the first for a slide whose actor died.
TASK_RETRIES = 3
#: Seconds the driver waits for cancelled slides after an interrupt before killing the actors.
STOP_GRACE_S = 60.0

Task = tuple[int, "SlideInput", dict[str, Any]]


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`InputError` telling how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


class Ledger:
    """Every (host, pid) of this run's actor processes, restarts included (a Ray actor)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()

    def add(self, who_host: str, pid: int) -> None:
        self.seen.add((who_host, pid))

    def has(self, who_host: str, pid: int) -> bool:
        return (who_host, pid) in self.seen


class _CancelCheck(RunEvents):
    """Progress inside an actor: a cancelled task drops its slide at the next batch."""

    def __init__(self) -> None:
        import ray

        self.context = ray.get_runtime_context()

    def run_started(self, slides: int) -> None:
        pass

    def slide_started(self, slide: SlideInput) -> None:
        pass

    def tiles(self, done: int, total: int, objects: int) -> None:
        if self.context.is_canceled():
            raise KeyboardInterrupt

    def slide_tiles(self, slide: SlideInput, done: int, total: int, objects: int) -> None:
        self.tiles(done, total, objects)

    def slide_finished(self, outcome: SlideOutcome) -> None:
        pass


class SlideActor:
    """One actor (a Ray worker process): the model loaded once, slides run one at a time."""

    def __init__(self, out: str, options: SegmentOptions, device: str, model_sha256: str,
                 ledger: str, log_level: int = logging.WARNING) -> None:
        import ray

        logging.getLogger("cerberus_cli").setLevel(log_level)
        self.me = (host(), os.getpid())
        # By name: plain arguments are kept inline, so a restart never needs the object store.
        self.ledger = ray.get_actor(ledger)
        ray.get(self.ledger.add.remote(*self.me))
        self.worker: SlideWorker = SlideWorker(Path(out), options, device, model_sha256)

    def segment(self, item: SlideInput, provenance: dict[str, Any]) -> SlideOutcome:
        return self.worker.run(item, provenance, _CancelCheck(), takeover=self._earlier_attempt)

    def _earlier_attempt(self, holder: Holder) -> bool:
        """True when the slide's claim holder is one of this run's actor processes but not this
        one: the driver gives each slide to one actor at a time, so that is a dead attempt."""
        import ray

        if (holder.host, holder.pid) == self.me:
            return False
        return bool(ray.get(self.ledger.has.remote(holder.host, holder.pid)))


def plan_actors(nodes: list[dict[str, Any]], device: str, cpus_each: int) -> tuple[str, int]:
    """(the actors' device, how many fit) on the cluster's alive ``nodes`` (``ray.nodes()``)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpus = sum(int(r.get("GPU", 0)) for r in alive)
    if device.startswith("cuda") and gpus == 0:
        raise InputError(f"--device {device} with --ray: the Ray cluster has no GPU "
                         "(use --device cpu or auto)")
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if use_gpu:
        count = sum(min(int(r.get("GPU", 0)), int(r.get("CPU", 0) // cpus_each)) for r in alive)
    else:
        count = sum(int(r.get("CPU", 0) // cpus_each) for r in alive)
    if count == 0:
        what = f"{cpus_each} CPU(s)" + (" and a GPU" if use_gpu else "")
        raise InputError(f"--ray: no node of the Ray cluster has {what} for an actor "
                         "(lower --ray-cpus)")
    return ("cuda" if use_gpu else "cpu"), count


def _absolute(options: SegmentOptions) -> SegmentOptions:
    """Options whose file paths mean the same on every node (the shared file system)."""
    changes: dict[str, Any] = {}
    if options.mask:
        changes["mask"] = str(Path(options.mask).resolve())
    if options.model and Path(options.model).exists():
        changes["model"] = str(Path(options.model).resolve())
    return replace(options, **changes) if changes else options


def run_on_ray(tasks: list[Task], out: Path, options: SegmentOptions, model_sha256: str,
               events: RunEvents, report: Callable[[SlideOutcome], None]) -> None:
    """Segment ``tasks`` on Ray actors (see the module docstring); outcomes go to ``report``.

    Ray prints its notices (a worker died, a task is retried) and the actors' output on
    the driver's stdout; during the run they go to stderr, so stdout (``--json``) holds
    only what the caller prints.
    """
    with contextlib.redirect_stdout(sys.stderr):
        _run_on_ray(tasks, out, options, model_sha256, events, report)


def _run_on_ray(tasks: list[Task], out: Path, options: SegmentOptions, model_sha256: str,
                events: RunEvents, report: Callable[[SlideOutcome], None]) -> None:
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        address = None if options.ray == "auto" else options.ray
        log.info("connecting to Ray (%s)", options.ray)
        handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=address, logging_level=logging.WARNING,
                 **({"include_dashboard": False} if address == "local" else {}))
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)  # ray.init put in its own: exit 15, no cleanup
        started = True
    actors: list[Any] = []
    ledger = None
    try:
        device, count = plan_actors(ray.nodes(), options.device, options.ray_cpus)
        count = min(count, len(tasks))
        resources: dict[str, Any] = {"num_cpus": options.ray_cpus}
        if device == "cuda":
            resources["num_gpus"] = 1  # only for CUDA: an unsatisfiable request waits forever
        log.info("Ray: %d actor(s) on %s, %s each", count, device, resources)
        name = f"cerberus-ledger-{secrets.token_hex(6)}"
        ledger = ray.remote(num_cpus=0)(Ledger).options(name=name).remote()
        actor_class = ray.remote(max_restarts=-1, max_task_retries=TASK_RETRIES, **resources)(SlideActor)
        opts = _absolute(options)
        level = logging.getLogger("cerberus_cli").getEffectiveLevel()
        actors = [actor_class.remote(str(out.resolve()), opts, device, model_sha256, name, level)
                  for _ in range(count)]
        _dispatch(ray, actors, tasks, options, events, report)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if ledger is not None:
            ray.kill(ledger, no_restart=True)
        if started:
            ray.shutdown()


def _dispatch(ray: Any, actors: list[Any], tasks: list[Task], options: SegmentOptions,
              events: RunEvents, report: Callable[[SlideOutcome], None]) -> None:
    """One slide per idle actor until none is left; interrupts cancel the slides in flight."""
    pending: deque[Task] = deque(tasks)
    idle = list(actors)
    inflight: dict[Any, tuple[Any, SlideInput]] = {}
    stopping = False

    def settle(ref: Any) -> SlideOutcome:
        actor, item = inflight.pop(ref)
        idle.append(actor)
        try:
            outcome: SlideOutcome = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return SlideOutcome(str(item.path), "interrupted",
                                "stopped by a signal; nothing of this slide was kept")
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            return SlideOutcome(str(item.path), "failed", f"Ray: {first_line(cause)}")
        outcome.slide = str(item.path)  # as given, not the absolute path the actor saw
        return outcome

    with deferred_stop():
        try:
            while pending or inflight:
                while idle and pending and not stopping:
                    _, item, provenance = pending.popleft()
                    actor = idle.pop(0)
                    ref = actor.segment.remote(replace(item, path=item.path.resolve()), provenance)
                    inflight[ref] = (actor, item)
                    events.slide_started(item)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                raise_if_stopped()  # a signal arrived: stop here
                for ref in ready:
                    outcome = settle(ref)
                    report(outcome)
                    if outcome.status == "failed" and options.fail_fast:
                        stopping = True
        except (KeyboardInterrupt, Terminated):
            for ref in inflight:
                ray.cancel(ref)
            deadline = time.monotonic() + STOP_GRACE_S
            while inflight and time.monotonic() < deadline:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    report(settle(ref))
            for ref in list(inflight):
                _, item = inflight.pop(ref)
                report(SlideOutcome(str(item.path), "interrupted", "stopped by a signal"))
            raise

