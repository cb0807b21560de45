"""The package's import graph has no cycle: each module can be read (and imported) after the ones it uses."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dwgn"


def module_name(path: Path, root: Path) -> str:
    """dwgn/models/hdmc.py -> dwgn.models.hdmc; dwgn/models/__init__.py -> dwgn.models."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules a module imports anywhere in its body (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from dwgn.data import paths` imports the module dwgn.data.paths; `from x import name` imports x
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import dwgn.models.hdmc.x` -> the longest known prefix
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}. A package's `__init__` importing its children is an
    edge like any other: a child that imports its own package (`from dwgn import build_model`) closes a cycle."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = imported_modules(ast.parse(path.read_text(), str(path)), name, is_package, known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring nodes on the current path)."""
    on_path: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        on_path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return on_path[on_path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        on_path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_dwgn_import_graph_has_no_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and "dwgn.models.hdmc" in graph["dwgn.models.network"]  # the parser sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_through_absolute_relative_and_function_level_imports(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")  # a package importing its child
    (pkg / "a.py").write_text("from pkg.sub import b\n\ndef f():\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..c import h  # a late import still closes a cycle\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "c.py").write_text("from pkg import f  # the package's __init__ imports pkg.a, which leads here\n")
    assert find_cycle(import_graph(pkg)) == ["pkg", "pkg.a", "pkg.sub.b", "pkg.c", "pkg"]
