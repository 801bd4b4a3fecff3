"""The package's layers: every import points down or sideways, and no import closes a circle.

The layer table lives in one place, the "Layers" section of ``docs/architecture.md``;
this test reads it and every module under ``src/tenet`` (each ``import``, wherever it
is: at the top, under ``if TYPE_CHECKING:`` or in a function body), and fails on a
module the table does not place, an import of a higher layer, or a cycle in the graph
of modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tenet

PACKAGE = Path(tenet.__file__).parent
DOCS = Path(__file__).parents[2] / "docs" / "architecture.md"

#: A module's dotted name (``tenet.store.db``) -> its imports of tenet modules, each as
#: (imported module, line number).
Graph = dict[str, list[tuple[str, int]]]


def layer_table() -> dict[str, int]:
    """Name (relative to ``tenet``: ``store``, ``models.base``, ``__init__``) -> layer."""
    text = DOCS.read_text()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for number, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.MULTILINE):
        for name in re.findall(r"`([\w.]+)`", modules):
            assert name not in table, f"{name} is in two layers of the table"
            table[name] = int(number)
    assert table, "no layer table in the Layers section of docs/architecture.md"
    return table


def module_name(path: Path) -> str:
    parts = ["tenet", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Graph:
    """Every module's imports of tenet modules, type-only and function-local ones included."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: Graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: list[tuple[str, int]] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                # ``from .pkg import mod`` imports the module ``pkg.mod``; ``from .mod import
                # name`` imports ``mod``.
                targets = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in paths else source
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                if target == "tenet" or target.startswith("tenet."):
                    assert target in paths, f"{path}:{node.lineno} imports unknown {target}"
                    edges.append((target, node.lineno))
        graph[name] = edges
    return graph


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the longest table name that is the module or a package holding it."""
    relative = "__init__" if module == "tenet" else module.removeprefix("tenet.")
    parts = relative.split(".")
    for n in range(len(parts), 0, -1):
        layer = table.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module, or a self-import
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    successors = {m: sorted({t for t, _ in edges}) for m, edges in graph.items()}
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            nexts = successors[node]
            if i < len(nexts):
                work.append((node, i + 1))
                child = nexts[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in successors[node]:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_every_module_has_a_layer_and_every_row_a_module() -> None:
    table = layer_table()
    graph = import_graph()
    unplaced = [m for m in graph if layer_of(m, table) is None]
    assert not unplaced, f"modules the Layers table does not place: {unplaced}"
    relative = {"__init__" if m == "tenet" else m.removeprefix("tenet.") for m in graph}
    stale = [
        name for name in table if not any(r == name or r.startswith(name + ".") for r in relative)
    ]
    assert not stale, f"Layers table names no such module: {stale}"


def test_no_module_imports_a_higher_layer() -> None:
    table = layer_table()
    upward = []
    for module, edges in import_graph().items():
        mine = layer_of(module, table)
        for target, line in edges:
            theirs = layer_of(target, table)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) line {line} -> {target} (layer {theirs})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_run_context_is_a_leaf() -> None:
    """``RunContext`` names what it needs as Protocols: it imports only the bottom layer."""
    table = layer_table()
    above = [t for t, _ in import_graph()["tenet.context"] if layer_of(t, table) != 0]
    assert not above, f"tenet.context imports {above}"


def test_the_cycle_check_finds_a_circle() -> None:
    """The checker itself: a circle of three and a self-import are found, a chain is not."""
    graph: Graph = {
        "a": [("b", 1)],
        "b": [("c", 1)],
        "c": [("a", 1), ("d", 1)],
        "d": [],
        "e": [("e", 1)],
    }
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": [("b", 1)], "b": [("c", 1)], "c": []}) == []
