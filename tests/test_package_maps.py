"""Every package's ``__init__`` docstring is its map: each module (and subpackage) is listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import cerberus_cli

ROOT = Path(cerberus_cli.__file__).parent

def _packages() -> list[Path]:
    return sorted(p.parent for p in ROOT.rglob("__init__.py"))


def _members(package: Path) -> list[str]:
    modules = [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
    subpackages = [p.name for p in package.iterdir() if (p / "__init__.py").exists()]
    return sorted(modules + subpackages)


def _listed(name: str, doc: str) -> bool:
    """Listed as :mod:`.name` (or its full dotted name), `.name`, ``name``, name.py or name/
    (a subpackage)."""
    n = re.escape(name)
    pattern = rf":mod:`\.{n}`|`\.{n}`|``{n}``|cerberus_cli(\.\w+)*\.{n}(?!\w)|(?<![\w.]){n}\.py\b|(?<![\w.]){n}/"
    return re.search(pattern, doc) is not None


@pytest.mark.parametrize("package", _packages(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_package_docstring_lists_every_module(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    missing = {m for m in _members(package) if not _listed(m, doc)}
    assert not missing, f"{package / '__init__.py'}: its docstring does not list {sorted(missing)}"
