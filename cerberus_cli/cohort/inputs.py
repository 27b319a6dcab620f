"""Which slides a run processes: files, folders, globs and manifests."""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.optionspec import check_mpp
from cerberus_cli.slides.sniff import IMAGE_EXTENSIONS, SLIDE_EXTENSIONS

#: File suffixes taken from folders: every slide format a backend reads, and plain images.
SLIDE_SUFFIXES = frozenset(SLIDE_EXTENSIONS | IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class SlideInput:
    """One slide to process; ``mpp`` overrides the file's resolution when set."""

    path: Path
    mpp: float | None = None
    id: str | None = None
    #: why this input cannot be processed (e.g. an unreadable folder), found while listing
    error: str | None = None

    @property
    def stem(self) -> str:
        """Output name: the file name without its (last) extension."""
        return self.path.name[: -len(self.path.suffix)] if self.path.suffix else self.path.name


def collect_inputs(
    paths: list[str], manifest: str | None = None, slides_dir: str | None = None
) -> list[SlideInput]:
    """Expand arguments and a manifest into a de-duplicated, ordered slide list.

    Folders are searched recursively for slide files (a GDC download keeps each
    slide in a folder named by its file id); arguments that do not exist but hold
    glob characters are expanded. Paths that do not exist are kept, so the run
    reports them as failed slides rather than stopping.
    """
    found: list[SlideInput] = []
    empty: list[str] = []
    for arg in paths:
        p = Path(arg)
        if _is_dir(p):
            inside = _slides_in(p)
            found += inside
            if not inside:
                empty.append(arg)
        elif not p.exists() and glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise InputError(f"{arg}: pattern matches no file")
            found += [SlideInput(Path(m)) for m in matches if Path(m).is_file()]
        else:
            found.append(SlideInput(p))
    if manifest:
        found += read_manifest(manifest, slides_dir)
    if not found and empty:
        raise InputError(f"{', '.join(empty)}: no slide files found (looked for "
                         f"{', '.join(sorted(SLIDE_SUFFIXES))})")
    unique: dict[Path, SlideInput] = {}
    for item in found:
        unique.setdefault(item.path.resolve() if item.path.exists() else item.path, item)
    items = list(unique.values())
    stems: dict[str, Path] = {}
    for item in items:
        if item.stem in stems:
            raise InputError(
                f"{item.path}: same output name '{item.stem}' as {stems[item.stem]}; "
                "outputs are named by slide file name, so process them into different folders"
            )
        stems[item.stem] = item.path
    return items


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _slides_in(folder: Path) -> list[SlideInput]:
    """Slide files under ``folder``; a subfolder that cannot be read becomes a failed input."""
    out: list[SlideInput] = []
    problems: list[SlideInput] = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename or folder)
        problems.append(SlideInput(where, error=f"{where}: folder cannot be read "
                                                 f"({exc.strerror or exc}); its slides were not found"))

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # not our own staging folders
        for name in sorted(files):
            f = Path(root) / name
            if f.suffix.lower() in SLIDE_SUFFIXES and not name.startswith(".") and \
                    not _is_output(name):
                out.append(SlideInput(f))
    return out + problems


#: Files ``cerberus segment`` writes beside its object files: never taken as slides.
_OUTPUT_TAILS = (".overlay.png", ".tissue.png", ".mask.png")


def _is_output(name: str) -> bool:
    return name.lower().endswith(_OUTPUT_TAILS)


def read_manifest(path: str | os.PathLike, slides_dir: str | None = None) -> list[SlideInput]:
    """Slides listed in a GDC manifest (TSV: id, filename, ...) or a CSV (path[, mpp]).

    A GDC file name is looked up as ``SLIDES_DIR/<id>/<filename>`` (the layout the
    GDC client downloads to), then ``SLIDES_DIR/<filename>``; ``SLIDES_DIR``
    defaults to the manifest's folder. CSV paths are relative to the same folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    base = Path(slides_dir) if slides_dir else path.parent
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{path}: manifest is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.DictReader(lines, delimiter=delimiter))
    header = [h.strip().lower() for h in (csv.DictReader(lines, delimiter=delimiter).fieldnames or [])]
    out: list[SlideInput] = []
    if "filename" in header and "id" in header:
        for row in rows:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            by_id = base / row["id"] / row["filename"]
            out.append(SlideInput(by_id if by_id.exists() else base / row["filename"], id=row["id"]))
    elif "path" in header:
        for n, row in enumerate(rows, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            mpp = None
            if row.get("mpp"):
                try:
                    mpp = float(row["mpp"])
                except ValueError:
                    raise InputError(f"{path}: line {n}: mpp {row['mpp']!r} is not a number") from None
                check_mpp(mpp, f"{path}: line {n}: mpp")
            p = Path(row["path"])
            out.append(SlideInput(p if p.is_absolute() else base / p, mpp=mpp, id=row.get("id") or None))
    else:
        raise InputError(
            f"{path}: not a manifest: expected a GDC manifest (columns id, filename) "
            f"or a CSV with a 'path' column (found {', '.join(header) or 'no header'})"
        )
    if not out:
        raise InputError(f"{path}: the manifest lists no slides (header only)")
    return out
