"""The seam between the segmentation pipeline and what receives its results.

The pipeline knows nothing of files: it opens a sink with a :class:`SlideContext`,
streams object records into it chunk by chunk, and finishes it with a
:class:`SlideResult` (tissue map, optional map store, statistics) or aborts it.
:class:`~cerberus_cli.cohort.slide_outputs.SlideOutputs` writes files;
:class:`MemorySink` keeps everything in memory for Python users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import ClassSpec
from cerberus_cli.inference.mapstore import MapStore, TissueMap

if TYPE_CHECKING:
    from cerberus_cli.slides import Slide, TissueMask


@dataclass(frozen=True)
class SlideContext:
    """What a sink needs to know about the slide and model before the first record."""

    key: str                      #: slide key: output stem, and part of every object id
    path: str                     #: the slide file ("" for an in-memory image)
    width: int                    #: level-0 size, px
    height: int
    mpp: float                    #: level-0 um/px
    model_name: str
    model_sha256: str
    model_mpp: float              #: um/px the network works at
    options: dict[str, Any] = field(default_factory=dict)  #: every option that shapes results
    #: class list of each type head (type maps name their classes with it)
    type_classes: dict[str, tuple[ClassSpec, ...]] = field(default_factory=dict)
    #: processed tiles as level-0 boxes (x, y, width, height)
    tiles: tuple[tuple[float, float, float, float], ...] = ()

    def metadata(self) -> dict[str, Any]:
        """The slide/model/options description writers embed in their files."""
        return {
            "slide": {"path": self.path, "key": self.key, "width": self.width,
                      "height": self.height, "mpp": self.mpp},
            "model": {"name": self.model_name, "sha256": self.model_sha256, "mpp": self.model_mpp},
            "options": self.options,
            "coordinates": "level-0 pixels",
        }


@dataclass
class SlideStats:
    """What one slide's segmentation produced and measured."""

    tiles: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tissue_fraction: float = 0.0
    grid: tuple[int, int] = (0, 0)
    #: network tiles whose pixels were damaged: position (model-resolution px), how
    damage: list[dict[str, Any]] = field(default_factory=list)
    #: objects dropped because their centroid lay off the tissue mask (glass, dust, pen)
    outside_tissue: int = 0
    #: largest peak RSS of a post-processing worker (MiB); None when they ran in the main process
    postprocess_worker_rss_mib: float | None = None

    def add(self, records: list[ObjectRecord]) -> None:
        for r in records:
            per_task = self.counts.setdefault(r.task, {})
            per_task[r.class_name] = per_task.get(r.class_name, 0) + 1

    @property
    def objects(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


@dataclass
class SlideResult:
    """Everything besides the streamed records that a sink receives at the end."""

    stats: SlideStats
    tissue: TissueMap | None = None
    maps: MapStore | None = None   #: set only when the maps are to be kept
    mask: TissueMask | None = None  #: where tissue was looked for (None: everywhere)


class ObjectSink(Protocol):
    """Receives one slide's results: ``open``, ``write``*, then ``finish`` or ``abort``."""

    def open(self, context: SlideContext, slide: Slide | None = None) -> None:
        """Start receiving one slide (``slide`` is there for sinks that read pixels)."""

    def write(self, records: list[ObjectRecord]) -> None:
        """Take one chunk's records (chunks arrive in plan order)."""

    def finish(self, result: SlideResult) -> None:
        """The slide is complete: make the results final."""

    def abort(self) -> None:
        """The slide failed or was interrupted: leave nothing final behind."""


class MemorySink:
    """Keeps a slide's records, tissue map and statistics in memory."""

    def __init__(self) -> None:
        self.context: SlideContext | None = None
        self.records: list[ObjectRecord] = []
        self.tissue_classes: np.ndarray | None = None
        self.tissue_mpp: float | None = None
        self.stats: SlideStats | None = None

    def open(self, context: SlideContext, slide: Slide | None = None) -> None:
        self.context = context
        self.records = []

    def write(self, records: list[ObjectRecord]) -> None:
        self.records.extend(records)

    def finish(self, result: SlideResult) -> None:
        self.stats = result.stats
        if result.tissue is not None:
            self.tissue_classes = result.tissue.classes
            self.tissue_mpp = result.tissue.mpp

    def abort(self) -> None:
        self.records = []
