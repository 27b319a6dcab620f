"""Check that a path is a readable file and tell its format from its first bytes.

Run before any reader is tried, so that a missing file, a directory, an empty
file or a PNG renamed ``.svs`` get a message that says exactly that, instead of
whatever the slide libraries make of it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cerberus_cli.core.errors import InputError

#: Extensions of formats read by OpenSlide/tiffslide (the container is TIFF for most).
SLIDE_EXTENSIONS = {
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
    ".bif", ".qptiff", ".dcm", ".czi", ".btf", ".tf8", ".tf2",
}
#: Extensions read by the plain-image backend.
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"PK\x03\x04", "zip"),
    (b"%PDF", "pdf"),
)
_CONTAINER_OF = {".svs": "tiff", ".tif": "tiff", ".tiff": "tiff", ".ndpi": "tiff",
                 ".scn": "tiff", ".bif": "tiff", ".qptiff": "tiff", ".btf": "tiff",
                 ".tf8": "tiff", ".tf2": "tiff", ".svslide": "tiff",
                 ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def sniff_format(head: bytes) -> str | None:
    """Container format (``png``, ``jpeg``, ``tiff``, ...) from a file's first bytes."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def check_slide_file(path: str | os.PathLike) -> tuple[Path, str | None]:
    """Raise :class:`InputError` unless ``path`` is a non-empty readable file.

    Returns the path and its sniffed container format (``None`` when unknown, e.g.
    MIRAX index files). A file whose content contradicts its extension (a PNG
    named ``.svs``) is rejected, because every reader would misreport it.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a slide file")
    if not p.is_file():
        raise InputError(f"{p}: is not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    kind = sniff_format(head)
    expected = _CONTAINER_OF.get(p.suffix.lower())
    if expected and kind and kind != expected:
        raise InputError(
            f"{p}: the file is a {kind.upper()} image but its extension "
            f"{p.suffix} says {expected.upper()}; rename it to match its content"
        )
    if expected and kind is None:
        raise InputError(f"{p}: not a {expected.upper()} file (unrecognised first bytes {head[:4]!r})")
    return p, kind


def png_header(path: Path) -> tuple[int, int, float | None]:
    """(width, height, mpp or None) of a PNG, from its IHDR and pHYs chunks only."""
    with open(path, "rb") as fh:
        fh.seek(8)  # signature
        width = height = None
        mpp = None
        while True:
            hdr = fh.read(8)
            if len(hdr) < 8:
                break
            length, ctype = struct.unpack(">I4s", hdr)
            if ctype == b"IHDR":
                width, height = struct.unpack(">II", fh.read(8))
                fh.seek(length - 8 + 4, 1)
            elif ctype == b"pHYs":
                ppx, _ppy, unit = struct.unpack(">IIB", fh.read(9))
                fh.seek(4, 1)
                if unit == 1 and ppx > 0:  # pixels per metre
                    mpp = 1e6 / ppx
            elif ctype in (b"IDAT", b"IEND"):
                break
            else:
                fh.seek(length + 4, 1)
    if width is None or height is None:
        raise InputError(f"{path}: PNG without an IHDR header (corrupt file)")
    return width, height, mpp


def jpeg_header(path: Path) -> tuple[int, int, float | None]:
    """(width, height, mpp or None) of a JPEG, from its JFIF and SOF segments only."""
    mpp = None
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            raise InputError(f"{path}: not a JPEG file")
        while True:
            marker = fh.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                break
            m = marker[1]
            if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
                continue
            seg_len_b = fh.read(2)
            if len(seg_len_b) < 2:
                break
            (seg_len,) = struct.unpack(">H", seg_len_b)
            body = fh.read(seg_len - 2)
            if m == 0xE0 and body[:5] == b"JFIF\x00" and len(body) >= 12:
                units, xd = body[7], struct.unpack(">H", body[8:10])[0]
                if xd > 0 and units == 1:  # dots per inch
                    mpp = 25400.0 / xd
                elif xd > 0 and units == 2:  # dots per centimetre
                    mpp = 1e4 / xd
            elif m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                height, width = struct.unpack(">HH", body[1:5])
                return width, height, mpp
            elif m == 0xDA:
                break
    raise InputError(f"{path}: JPEG without a frame header (truncated or corrupt file)")
