"""The shape of the package (issue #25), checked from its source: the rules a change must keep.

No import cycle (imports inside functions and under TYPE_CHECKING count), no class over 25
methods, no function over 60 lines, ``/proc`` opened by ``ops/procfs.py`` alone, a core that
imports neither Flask nor the socket layer, and ``scripts/leakcheck.py`` a thin entry.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kafkatail"
MAX_METHODS = 25
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


MODULES = _modules()


def _imports(name: str, path: Path, tree: ast.Module) -> set[str]:
    """The package's modules that ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c in MODULES and c != name)
    return found


GRAPH = {name: _imports(name, *MODULES[name]) for name in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_package():
    assert _cycles() == []


def test_the_cycle_finder_finds_one():
    GRAPH["kafkatail.tail.frames"].add("kafkatail.tail.pool")
    try:
        assert any("kafkatail.tail.pool" in c for c in _cycles())
    finally:
        GRAPH["kafkatail.tail.frames"].discard("kafkatail.tail.pool")


def _defs():
    for name, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield name, node


def test_no_class_over_25_methods():
    big = {f"{mod}.{node.name}": n for mod, node in _defs() if isinstance(node, ast.ClassDef)
           for n in [sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))
                         for b in node.body)] if n > MAX_METHODS}
    assert big == {}


def test_no_function_over_60_lines():
    long = {f"{mod}.{node.name}": node.end_lineno - node.lineno + 1 for mod, node in _defs()
            if not isinstance(node, ast.ClassDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert long == {}


def _proc_paths(tree: ast.Module) -> list[int]:
    """Lines of string literals (f-strings included) that begin with a /proc path."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("/proc"):
                lines.append(node.lineno)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("/proc")):
            lines.append(node.lineno)
    return lines


def test_proc_is_read_by_procfs_alone():
    readers = {name: lines for name, (_, tree) in MODULES.items()
               if (lines := _proc_paths(tree))}
    assert set(readers) == {"kafkatail.ops.procfs"}, readers


@pytest.mark.parametrize("core", ["kafkatail.tail"])
def test_the_core_knows_nothing_of_flask_or_sockets(core):
    offenders = {}
    for name, (path, tree) in MODULES.items():
        if not name.startswith(core + "."):
            continue
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = {n for n in names if n.split(".")[0] in ("flask", "flask_sock", "simple_websocket",
                                                       "wsproto", "gunicorn")}
        bad |= {m for m in GRAPH[name] if m.startswith(("kafkatail.web", "kafkatail.app",
                                                        "kafkatail.server", "kafkatail.workers"))}
        if bad:
            offenders[name] = sorted(bad)
    assert offenders == {}


def test_scripts_leakcheck_is_a_thin_entry():
    text = (ROOT / "scripts" / "leakcheck.py").read_text()
    assert len(text.splitlines()) < 60
    assert "sys.path" not in text and "from kafkatail.leakcheck import main" in text
