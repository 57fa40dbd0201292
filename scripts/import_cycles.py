"""List the import cycles inside the ``ladder`` package, and every import that breaks its layering.

    python scripts/import_cycles.py            # one line per cycle or layering break; exit status 1 if any
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

``importlib.import_module("a.b")`` and ``__import__("a.b")`` with a literal name are imports too (they run).

A cycle is a strongly connected component of more than one module.

The layering (DESIGN.md: data flows frontend -> Graph -> passes -> backend): the **core** (``CORE``: types,
IR, ops, the interpreter, verifier, passes, packings, targets, tuning records, the budget, the compile driver
and the backend protocol) imports only the core, at the top level, inside functions and for annotations alike:
no frontend, no backend, no application module (cli, demo, generate, tune, models, ...), and not the
``ladder`` package itself, whose ``__init__`` re-exports applications. A backend imports the core and itself,
never another backend. The core reaches a backend only through ladder.backend's registry, which imports the
module of a target kind by name when that kind is first used.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {"ladder": "ladder", "ladder.frontends": "frontends", "ladder.backends": "backends"}

# The core: each name is a module, or a package with everything under it.
CORE = (
    "ladder.errors", "ladder.dtypes", "ladder.packing", "ladder.types", "ladder.constdata", "ladder.printer",
    "ladder.ir", "ladder.ops", "ladder.verifier", "ladder.quant", "ladder.builder", "ladder.weights",
    "ladder.budget", "ladder.interpreter", "ladder.target", "ladder.tuning", "ladder.passes", "ladder.context",
    "ladder.backend", "ladder.reference", "ladder.compile",
)
BACKENDS = "ladder.backends"


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


def _imported_by_name(node: ast.AST) -> str | None:
    """The module a call ``importlib.import_module("a.b")`` / ``import_module("a.b")`` / ``__import__("a.b")``
    names, when it is an absolute literal; else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    arg = node.args[0]
    if name not in ("import_module", "__import__") or not isinstance(arg, ast.Constant):
        return None
    return arg.value if isinstance(arg.value, str) and not arg.value.startswith(".") else None


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
        literal = _imported_by_name(node)
        if literal:
            add_prefix(literal, True)
        elif isinstance(node, ast.Import):
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


def in_core(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CORE)


def backend_of(module: str) -> str | None:
    """``ladder.backends.llvm`` for any module under it; None outside the backends."""
    parts = module.split(".")
    return ".".join(parts[:3]) if module.startswith(BACKENDS + ".") and len(parts) >= 3 else None


def layering_violations(graph: nx.DiGraph) -> list[tuple[str, str, str]]:
    """(module, the module it imports, why that breaks the layering) for every core module importing outside
    the core and every backend importing another backend: at the top level, in a function, or under
    ``if TYPE_CHECKING:`` (an annotation is a dependency too), sorted."""
    out = []
    for a, b, runs in graph.edges(data="runtime"):
        how = "" if runs else " (for annotations)"
        if in_core(a) and not in_core(b):
            out.append((a, b, "the core imports only the core" + how))
        elif backend_of(a) and backend_of(b) and backend_of(a) != backend_of(b):
            out.append((a, b, "a backend imports no other backend" + how))
    return sorted(out)


def names_by_string(root: Path = ROOT) -> list[tuple[str, str]]:
    """(core module, module outside the core) for every string literal in a core module that is exactly the
    name of a module outside the core: a module to be imported later by name (ladder.backend's registry of the
    shipped backends is meant to be the only one). The bare word "ladder" is left out: it is a name, too."""
    files = module_files(root)
    out = []
    for module, path in files.items():
        if not in_core(module):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if (isinstance(node, ast.Constant) and node.value in files and node.value != "ladder"
                    and not in_core(node.value)):
                out.append((module, node.value))
    return sorted(set(out))


def _show(graph: nx.DiGraph, comp: list[str]) -> str:
    # one concrete loop through the component, to show where to cut
    loop = nx.find_cycle(graph.subgraph(comp), source=comp[0])
    return " -> ".join([loop[0][0], *(b for _, b in loop)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every import edge as well")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
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
    for a, b in names_by_string(args.root):
        print(f"note: {a} names {b}, to import it by name when it is first used")
    broken = layering_violations(graph)
    print(f"layering: {len(broken)} import(s) against it")
    for a, b, why in broken:
        print(f"{a} -> {b}: {why}")
    return 1 if found or broken else 0


if __name__ == "__main__":
    sys.exit(main())
