"""The import graph of layerwatch has no circle, and every module imports alone.

The graph is read from the source (every ``import`` and ``from ... import`` of a layerwatch
module, at module level and inside functions alike, ``if TYPE_CHECKING:`` blocks left out):
a function-local import that closes a circle is a circle all the same.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "layerwatch"


def module_files(root: Path, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` for every module of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import under ``node``, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                found.extend(_imports_of(other))
            continue
        found.extend(_imports_of(child))
    return found


def _imports_of(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    here = [node] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
    return here + _imports(node)


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``; relative imports resolved, and
    ``from pkg import name`` read as the submodule ``pkg.name`` when there is one."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    while target and target not in modules:  # import a.b.c: the deepest module there is
                        target = target.rpartition(".")[0]
                    if target:
                        deps.add(target)
                continue
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                deps.add(sub if sub in modules else base)
        deps.discard(name)
        graph[name] = {d for d in deps if d in modules}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_circle():
    graph = import_graph(ROOT)
    assert "layerwatch.monitor" in graph and len(graph) > 40  # the package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_the_package_root():
    # The root only names the public API; a module that imports it points upwards.
    graph = import_graph(ROOT)
    upward = sorted(name for name, deps in graph.items() if PACKAGE in deps)
    assert upward == [], f"these modules import the package root (use layerwatch._version for the version): {upward}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_graph_sees_circles_closed_inside_functions_and_skips_type_checking(tmp_path):
    # The checker itself: a circle closed by a function-local import is found; one through
    # an `if TYPE_CHECKING:` block is not; `from . import x` is the submodule x.
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from . import a\n    return a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import g\nelse:\n    import os\n",
        "pkg/d.py": "from .c import os\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/e.py": "from .. import c\nfrom ..sub import e as _\nimport pkg.d\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"}
    assert graph["pkg.sub.e"] == {"pkg.c", "pkg.d"}
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])
    del graph["pkg.b"]
    assert find_cycle(graph) is None


# One interpreter; before each module every layerwatch module is dropped from sys.modules,
# so each is imported alone, with only what it imports itself (third-party libraries stay
# loaded, which keeps this cheap).
_IMPORT_EACH = r"""
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "layerwatch" or m.startswith("layerwatch.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    names = sorted(import_graph(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], capture_output=True, text=True, timeout=600,
        cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n".join(f"{name}:\n{tb}" for name, tb in failed.items())


@pytest.mark.parametrize("name", ["capture", "LayerwatchCallback", "RunStore"])
def test_the_public_names_are_the_functions_and_classes(name):
    import layerwatch

    value = getattr(layerwatch, name)
    assert callable(value) and not isinstance(value, type(sys))
