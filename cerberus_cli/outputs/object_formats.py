"""The one table of object file formats: name, file suffixes, first bytes, writer, reader.

Every place that picks a format reads this table: ``--format`` (by name), writers and
the pairing of ``evaluate`` and ``features --objects`` (by suffix), and
:func:`~cerberus_cli.outputs.read.read_objects` (by first bytes, then by suffix). A new
format is one module giving a writer (:class:`WriterFactory`) and a reader
(:class:`Reader`), plus one line in :data:`FORMATS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import geopandas as gpd

from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.outputs.frame import Window
from cerberus_cli.outputs.geojson import open_geojson_writer
from cerberus_cli.outputs.geojson_read import GZIP_MAGIC, read_geojson
from cerberus_cli.outputs.geoparquet import open_geoparquet_writer
from cerberus_cli.outputs.geoparquet_read import read_geoparquet
from cerberus_cli.outputs.options import WriterOptions


class ObjectWriter(Protocol):
    """A streaming object writer: nothing appears under ``path`` before :meth:`close`."""

    path: Path

    def write(self, records: Iterable[ObjectRecord]) -> None: ...

    def close(self) -> Path: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class WriterFactory(Protocol):
    """Opens a writer. ``metadata`` (slide and model) and ``slide`` (the slide's name) are
    for formats that have a place for them; a format takes what it needs."""

    def __call__(self, path: str | os.PathLike, options: WriterOptions | None = None,
                 metadata: dict[str, Any] | None = None, slide: str | None = None,
                 overwrite: bool = False) -> ObjectWriter: ...


#: Reads a file into the layout of :data:`~cerberus_cli.outputs.frame.COLUMNS`; with a
#: window, only the objects whose centroid lies in it.
Reader = Callable[[Path, Window | None], gpd.GeoDataFrame]


@dataclass(frozen=True)
class ObjectFormat:
    """One object file format.

    ``suffixes``: the file name endings that are this format, the first the one
    written; ``gzip_suffix``: written with ``--gzip`` (None: the format compresses
    itself); ``magic``: first bytes (after leading whitespace) of its files.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    gzip_suffix: str | None
    magic: tuple[bytes, ...]
    open_writer: WriterFactory
    read: Reader


#: Every object format, the preferred first (``evaluate`` and ``features`` take it when a
#: slide has files of several).
FORMATS: tuple[ObjectFormat, ...] = (
    ObjectFormat("parquet", "GeoParquet", (".parquet", ".geoparquet"), None, (b"PAR1",),
                 open_geoparquet_writer, read_geoparquet),
    ObjectFormat("geojson", "QuPath GeoJSON", (".geojson", ".geojson.gz"), ".geojson.gz",
                 (b"{", b"[", GZIP_MAGIC), open_geojson_writer, read_geojson),
)
#: ``--format`` choices.
FORMAT_NAMES = tuple(f.name for f in FORMATS)
#: Every object file suffix, longest first (so ``.geojson.gz`` wins over a shorter one).
OBJECT_SUFFIXES = tuple(sorted((s for f in FORMATS for s in f.suffixes), key=len, reverse=True))


def object_format(name: str) -> ObjectFormat:
    """The format called ``name`` (``--format``)."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown object format {name!r}; expected {' or '.join(FORMAT_NAMES)}")


def object_suffix(name: str, gzip: bool = False) -> str:
    """The suffix an object file of format ``name`` is written under."""
    fmt = object_format(name)
    if not gzip:
        return fmt.suffixes[0]
    if fmt.gzip_suffix is None:
        raise ValueError(f"gzip applies to GeoJSON only; {fmt.title} is compressed already")
    return fmt.gzip_suffix


def suffix_of(path: str | os.PathLike) -> str | None:
    """The object-file suffix ``path``'s name ends in (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((s for s in OBJECT_SUFFIXES if name.endswith(s)), None)


def format_of_name(path: str | os.PathLike) -> ObjectFormat | None:
    """The format ``path``'s suffix names, or None."""
    suffix = suffix_of(path)
    return next((f for f in FORMATS if suffix in f.suffixes), None)


def format_of_bytes(head: bytes) -> ObjectFormat | None:
    """The format whose files start with ``head`` (leading whitespace skipped), or None."""
    stripped = head.lstrip()
    return next((f for f in FORMATS if any(stripped.startswith(m) for m in f.magic)), None)


def format_rank(fmt: ObjectFormat) -> int:
    """Preference of ``fmt`` among :data:`FORMATS` (higher is preferred)."""
    return len(FORMATS) - FORMATS.index(fmt)
