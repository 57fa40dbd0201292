"""List the import cycles inside the ``ladder`` package.

    python scripts/import_cycles.py            # one line per cycle; exit status 1 when there is one
    python scripts/import_cycles.py --edges    # also print every import edge

The module graph is read from the sources with ``ast``, not by importing them: a node is a module
(``ladder.ir``, ``ladder.backends.asic.isa``, ...), an edge says that one module imports another, at the top
level or inside a function. Source folders are mapped as in pyproject.toml's ``package-dir``: ``ladder/`` is
``ladder``, ``frontends/`` is ``ladder.frontends``, ``backends/`` is ``ladder.backends``.

An import under ``if TYPE_CHECKING:`` never runs; it only lets an annotation name a class. Such edges are kept
apart: cycles are found among the imports that run, and the cycles that annotation-only imports would add
are listed after them, as notes (they never fail the exit status).

``from a.b import c`` points at ``a.b.c`` when that is a module and at ``a.b`` otherwise. Importing a module
also runs its parent packages' ``__init__``; those implicit edges are left out, since every module would
otherwise sit in one cycle through ``ladder/__init__.py``, which re-exports the public API.

A cycle is a strongly connected component of more than one module.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {"ladder": "ladder", "ladder.frontends": "frontends", "ladder.backends": "backends"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> source file, for every .py file under the package's source folders."""
    modules: dict[str, Path] = {}
    for package, folder in SOURCE_DIRS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import statements under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inside


def imports_of(module: str, path: Path, known: set[str]) -> dict[str, bool]:
    """The modules of ``known`` that ``module`` imports anywhere in its source -> whether some import of it
    runs (False: only under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    type_only = _type_checking_nodes(tree)
    found: dict[str, bool] = {}

    def add(name: str, runs: bool) -> None:
        found[name] = found.get(name, False) or runs

    def add_prefix(name: str, runs: bool) -> None:
        # the longest known prefix: ``import ladder.ops.base`` names ladder.ops.base
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                add(candidate, runs)
                return
            parts.pop()

    for node in ast.walk(tree):
        runs = id(node) not in type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                add_prefix(alias.name, runs)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    add(sub, runs)
                else:
                    add_prefix(base, runs)
    found.pop(module, None)  # ``from . import x`` in a package's __init__ names the package itself
    return found


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    files = module_files(root)
    known = set(files)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for module, path in files.items():
        for target, runs in imports_of(module, path, known).items():
            graph.add_edge(module, target, runtime=runs)
    return graph


def runtime_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """The imports that run (not only under ``if TYPE_CHECKING:``)."""
    return graph.edge_subgraph([(a, b) for a, b, runs in graph.edges(data="runtime") if runs])


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Strongly connected components of more than one module, each sorted, largest first."""
    comps = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    return sorted(comps, key=lambda c: (-len(c), c))


def type_only_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """The cycles of the whole graph that are not cycles of the imports that run."""
    running = {frozenset(c) for c in cycles(runtime_graph(graph))}
    return [c for c in cycles(graph) if frozenset(c) not in running]


def _show(graph: nx.DiGraph, comp: list[str]) -> str:
    # one concrete loop through the component, to show where to cut
    loop = nx.find_cycle(graph.subgraph(comp), source=comp[0])
    return " -> ".join([loop[0][0], *(b for _, b in loop)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every import edge as well")
    args = parser.parse_args(argv)
    graph = import_graph()
    if args.edges:
        for a, b, runs in sorted(graph.edges(data="runtime")):
            print(f"{a} -> {b}" + ("" if runs else "  (TYPE_CHECKING only)"))
    running = runtime_graph(graph)
    found = cycles(running)
    print(f"{graph.number_of_nodes()} modules, {running.number_of_edges()} imports that run "
          f"(+{graph.number_of_edges() - running.number_of_edges()} for annotations only), {len(found)} cycles")
    for comp in found:
        print(f"cycle of {len(comp)}: {', '.join(comp)}")
        print(f"    e.g. {_show(running, comp)}")
    for comp in type_only_cycles(graph):
        print(f"note: a cycle through annotation-only imports: {', '.join(comp)}")
        print(f"    e.g. {_show(graph, comp)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
