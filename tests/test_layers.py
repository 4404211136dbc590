"""Arrows only point down (DESIGN.md, issue 15): a static read of every module's imports.

    nfmesh_cli   -> anything of ours (the composition root: the ``nfmesh`` program)
    perf         -> gateway, nf_adapters, dataplane
    gateway      -> nf_adapters, dataplane        (never perf, nfmesh_cli)
    nf_adapters  -> dataplane                     (never gateway, perf)
    dataplane    -> nothing of ours above it

Python modules are read with ``ast`` (every ``import``/``from`` anywhere in the file, inside
functions too: a deferred import is still an arrow); Cython files (``.pyx``/``.pxd``/``.pxi``)
by their ``import``/``cimport`` lines.  Modules loaded by a name in a string
(``importlib.import_module("perf.compare")``) are not imports and are not counted.  There is
no allow-list: an upward import or a cycle between the packages fails.

The same reading keeps files small enough to carry: a tracked source file (``.py``, ``.pyx``,
``.pxi``, ``.pxd``, ``.sh``) over ``MAX_LINES`` lines fails too.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from itertools import permutations

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("nfmesh_cli", "gateway", "nf_adapters", "dataplane", "perf")
ALLOWED: dict[str, set[str]] = {
    "nfmesh_cli": {"gateway", "nf_adapters", "dataplane", "perf"},
    "perf": {"gateway", "nf_adapters", "dataplane"},
    "gateway": {"nf_adapters", "dataplane"},
    "nf_adapters": {"dataplane"},
    "dataplane": set(),
}
MAX_LINES = 1000
SOURCE_SUFFIXES = (".py", ".pyx", ".pxi", ".pxd", ".sh")
_CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\b|c?import\s+([\w.]+))")


def _python_imports(path: str, module: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                is_pkg = path.endswith("__init__.py")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def _cython_imports(path: str) -> list[tuple[int, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = _CYTHON_IMPORT.match(line)
            if m:
                out.append((lineno, m.group(1) or m.group(2)))
    return out


def _edges() -> list[tuple[str, str, int, str]]:
    """(file, importing package, line, imported module) for every import of one of ours."""
    edges = []
    for pkg in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, pkg)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                if name.endswith(".py"):
                    module = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
                    found = _python_imports(path, module)
                elif name.endswith((".pyx", ".pxd", ".pxi")):
                    found = _cython_imports(path)
                else:
                    continue
                for lineno, imported in found:
                    if imported.split(".")[0] in PACKAGES:
                        edges.append((rel.replace(os.sep, "/"), pkg, lineno, imported))
    return edges


def test_the_reader_sees_the_imports_it_should() -> None:
    """Guard against a reader that finds nothing (and so passes everything)."""
    edges = _edges()
    seen = {(pkg, imported.split(".")[0]) for _f, pkg, _l, imported in edges}
    assert ("gateway", "nf_adapters") in seen and ("nf_adapters", "dataplane") in seen
    assert ("perf", "gateway") in seen and ("nfmesh_cli", "perf") in seen
    assert any(f.endswith(".pyx") for f, *_ in edges)  # Cython files are read too


def test_no_upward_import() -> None:
    upward = []
    for rel, pkg, lineno, imported in _edges():
        target = imported.split(".")[0]
        if target == pkg or target in ALLOWED[pkg]:
            continue
        upward.append(f"{rel}:{lineno}: {pkg} imports {imported}")
    assert not upward, "imports pointing up a layer (DESIGN.md):\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs of packages (a < b) that reach each other through ``graph``'s arrows."""

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == b:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return [(a, b) for a, b in permutations(sorted(graph), 2)
            if a < b and reaches(a, b) and reaches(b, a)]


def test_the_cycle_finder_finds_cycles() -> None:
    """Guard: a two-step cycle is found, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [("a", "b"), ("a", "c"),
                                                                         ("b", "c")]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_among_the_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    where: dict[tuple[str, str], str] = {}  # one import that draws each arrow, for the message
    for rel, pkg, lineno, imported in _edges():
        target = imported.split(".")[0]
        if target != pkg:
            graph[pkg].add(target)
            where.setdefault((pkg, target), f"{rel}:{lineno} imports {imported}")
    cycles = _cycles(graph)
    members = {p for pair in cycles for p in pair}
    arrows = sorted(v for (a, b), v in where.items() if a in members and b in members)
    assert not cycles, (f"import cycles between packages: {cycles}; arrows involved:\n"
                        + "\n".join(arrows))


def _tracked_sources() -> list[str]:
    """Tracked source files (paths relative to the repository), from ``git ls-files``."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [p for p in out.decode().split("\0") if p.endswith(SOURCE_SUFFIXES)]


def _line_count(rel: str) -> int | None:
    try:
        with open(os.path.join(ROOT, rel), "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:  # deleted in the working tree, not yet committed
        return None


def test_the_file_lister_sees_the_sources() -> None:
    """Guard against a lister that finds nothing (and so passes everything)."""
    files = _tracked_sources()
    assert "tests/test_layers.py" in files and "gateway/config.py" in files
    assert any(f.endswith(".pyx") for f in files) and any(f.endswith(".sh") for f in files)
    assert (_line_count("tests/test_layers.py") or 0) > 100


def test_no_source_file_over_max_lines() -> None:
    counts = {rel: _line_count(rel) for rel in _tracked_sources()}
    long = sorted(f"{rel}: {n} lines" for rel, n in counts.items()
                  if n is not None and n > MAX_LINES)
    assert not long, (f"source files over {MAX_LINES} lines (split them by concern):\n"
                      + "\n".join(long))
