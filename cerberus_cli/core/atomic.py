"""Write-then-rename: outputs appear complete or not at all.

Every writer writes to a temporary name in the destination folder (same file
system, so :func:`os.replace` is atomic) and renames it when complete. An aborted
write removes the temporary file; a user's existing file is never replaced unless
``overwrite`` is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from cerberus_cli.core.errors import CerberusError, InputError


class AtomicPath:
    """A temporary sibling of ``path`` that becomes ``path`` on :meth:`commit`.

    Works for files and for folders (e.g. a zarr store). The temporary name is
    ``<name>.<random>.partial`` so an interrupted run leaves a recognisable name,
    never a truncated file under the final name.
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: output folder {self.path.parent} does not exist")
        self._check_target()
        self.tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.partial")
        self.done = False

    def _check_target(self) -> None:
        if self.path.exists() and not self.overwrite:
            raise CerberusError(f"{self.path}: already exists (refusing to overwrite)")

    def commit(self) -> Path:
        """Move the temporary output to its final name and return that name."""
        if self.done:
            return self.path
        try:
            self._check_target()
        except CerberusError:
            self.abort()
            raise
        # os.replace cannot put a folder over a file or onto a non-empty folder.
        if self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists() and self.tmp.is_dir():
            self.path.unlink()
        os.replace(self.tmp, self.path)
        self.done = True
        return self.path

    def write_text(self, text: str) -> Path:
        """Write ``text`` and commit it; on any failure nothing (not even the temporary) is left."""
        try:
            self.tmp.write_text(text)
            return self.commit()
        finally:
            self.abort()  # a no-op once committed

    def abort(self) -> None:
        """Remove the temporary output (a no-op after :meth:`commit`)."""
        if self.done:
            return
        self.done = True
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass
