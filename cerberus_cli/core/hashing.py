"""Content hashes of files, read in blocks (slides and checkpoints run to gigabytes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_BLOCK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, or of a folder (``folder: True``; the hash of its files'
    relative paths, sizes and digests, sorted)."""
    if path.is_dir():
        h = hashlib.sha256()
        total = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            d = file_digest(f)
            total += d["size"]
            h.update(f"{f.relative_to(path).as_posix()}\0{d['size']}\0{d['sha256']}\n".encode())
        return {"size": total, "sha256": h.hexdigest(), "folder": True}
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}
