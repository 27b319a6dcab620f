"""What a run reports: each slide's outcome, the run's summary and its progress events.

The types every runner shares: the one-process loop (:mod:`.runs`), the device
workers (:mod:`.devices`), the Ray actors (:mod:`.ray_runner`) and the per-slide
protocol they all serve (:mod:`.slide_run`). This module imports none of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput

Status = Literal["done", "done with damage", "skipped", "running elsewhere", "failed",
                 "interrupted"]


@dataclass
class SlideOutcome:
    """The result of one slide in a run."""

    slide: str
    status: Status
    message: str = ""
    objects: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    #: objects per task and class (done slides)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class RunSummary:
    """All slides of a run; ``ok`` is False when any slide failed."""

    slides: list[SlideOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no slide failed or was interrupted."""
        return all(s.status not in ("failed", "interrupted") for s in self.slides)

    def count(self, status: Status) -> int:
        """How many slides ended with ``status``."""
        return sum(s.status == status for s in self.slides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: counts by status and one entry per slide."""
        return {"done": self.count("done"), "done_with_damage": self.count("done with damage"),
                "skipped": self.count("skipped"),
                "running_elsewhere": self.count("running elsewhere"), "failed": self.count("failed"),
                "interrupted": self.count("interrupted"),
                "slides": [asdict(s) for s in self.slides]}


class RunEvents:
    """Progress of a run, for a caller that shows it; every method is a no-op here."""

    def run_started(self, slides: int) -> None:
        """``slides`` slides are to be segmented (skipped ones excluded)."""

    def slide_started(self, slide: SlideInput) -> None:
        """Work on ``slide`` begins."""

    def tiles(self, done: int, total: int, objects: int) -> None:
        """Progress within the current slide."""

    def slide_tiles(self, slide: SlideInput, done: int, total: int, objects: int) -> None:
        """Progress within ``slide`` (several slides run at once with --devices); by default
        :meth:`tiles`."""
        self.tiles(done, total, objects)

    def slide_finished(self, outcome: SlideOutcome) -> None:
        """A slide is done, skipped or failed."""
