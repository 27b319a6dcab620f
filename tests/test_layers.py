"""The package layers point one way (docs/interfaces.md): no import reaches up or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import cerberus_cli

ROOT = Path(cerberus_cli.__file__).parent

#: Bottom to top; packages on one line are siblings and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("model", "slides"),
    ("postprocess", "outputs"),
    ("synthetic",),
    ("inference", "metrics"),
    ("cohort", "training"),
    ("transfer",),
    ("cli",),
]
#: The two wings above the shared base: segmentation (slides -> inference -> cohort) and
#: learning (metrics -> training -> transfer). Neither wing imports the other.
WINGS: dict[str, tuple[str, ...]] = {
    "segmentation": ("inference", "cohort"),
    "learning": ("metrics", "training", "transfer"),
}
RANK = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}
WING = {pkg: wing for wing, pkgs in WINGS.items() for pkg in pkgs}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cerberus_cli" else None


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"bundled"}
    assert packages <= set(RANK), f"packages without a layer: {packages - set(RANK)}"


def test_imports_point_down():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        own = rel.parts[1] if len(rel.parts) > 2 else None
        if own is None:
            continue  # the root package (lazy API) and __main__ sit above everything
        for module, names in _imports(path):
            if module == "cerberus_cli":
                if set(names) - {"__version__"}:
                    bad.append(f"{rel}: imports {names} from the root package")
                continue
            target = _package(module)
            if target is None or target == own or target == "bundled":
                continue
            if target not in RANK or RANK[target] >= RANK[own]:
                bad.append(f"{rel}: {own} imports {module}")
            elif own in WING and target in WING and WING[own] != WING[target]:
                bad.append(f"{rel}: {own} ({WING[own]}) imports {module} ({WING[target]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_public_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = ("import sys, cerberus_cli; assert 'torch' not in sys.modules; "
            "from cerberus_cli import segment, SegmentOptions, segment_image, train, evaluate; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    for name in cerberus_cli.__all__:
        assert getattr(cerberus_cli, name) is not None


def test_wings_are_ordered_within_their_layers():
    for pkgs in WINGS.values():
        ranks = [RANK[p] for p in pkgs]
        assert ranks == sorted(set(ranks)), f"a wing's packages must climb one layer each: {pkgs}"
    assert not set(WINGS["segmentation"]) & set(WINGS["learning"])


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle():
    """No module imports, however indirectly and however late (inside a function), a
    module that imports it back."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for module, names in _imports(path):
            for target in (module, *(f"{module}.{n}" for n in names)):
                # A package's __init__ is imported with each of its modules: not an edge back.
                if target in paths and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    cycles, done, stack = [], set(), []

    def visit(node: str) -> None:
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in done:
                visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
