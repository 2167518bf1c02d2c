"""The package's import graph, read from the source, and its cycles.

Why: an import cycle works only while every module in it happens to be imported in
a lucky order, and the usual way to hide one - an import moved into a function -
makes the dependency invisible to readers. This module lets a test (and anyone)
check that the package has none: ``python -m tvm_autoglm.testing.import_graph``
prints each cycle and exits 1 if there is any.

Which imports count as edges (read with ``ast``, nothing is imported):

- every ``import`` / ``from ... import`` of a ``tvm_autoglm`` module, at module top
  level *and* inside functions: an in-function import is still a dependency, and
  moving an import into a function was how the old cycles were hidden;
- ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
  to ``pkg`` (``from . import register`` depends on the package's ``__init__``);
- not counted: imports under ``if TYPE_CHECKING:`` (never executed), strings given
  to ``importlib.import_module`` (a registry loading its plugins by name: the one
  deliberate late binding), and the implicit import of a parent package when a
  submodule is imported (every submodule would otherwise be in a cycle with a
  package ``__init__`` that imports it).

A cycle is a strongly connected component with more than one module, or a module
that imports itself.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

def package_root() -> Path:
    """The directory of the installed (or checked-out) ``tvm_autoglm`` package."""
    return Path(__file__).resolve().parent.parent


def module_files(root: Path | None = None) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the package."""
    root = root or package_root()
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name that ``from <node.module> import ...`` reads, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``module`` (source at ``path``) imports, per the rules in the module docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            source = _resolve_from(module, is_package, node)
            names = []
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                names.append(candidate if candidate in known else source)
        for name in names:
            # "import a.b.c" of a name that is not a module file (an attribute): the longest module prefix
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:  # else not a module of this package (tvm, numpy, ...)
                targets.add(name)
    return targets


def import_graph(root: Path | None = None) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    files = module_files(root)
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative: the package is deep enough to matter for recursion); each component sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycles(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """The import cycles: components of more than one module, and modules that import themselves; largest first."""
    graph = import_graph() if graph is None else graph
    found = [c for c in strongly_connected_components(graph) if len(c) > 1 or c[0] in graph.get(c[0], ())]
    return sorted(found, key=lambda c: (-len(c), c))


def cycle_edges(component: list[str], graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that keep ``component`` a cycle (edges between its members): what to cut."""
    members = set(component)
    return sorted((a, b) for a in component for b in graph.get(a, ()) if b in members)


def main(argv: list[str] | None = None) -> int:
    """Print the cycles of the package (or of the package folder given as the one argument); 1 if any."""
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]).resolve() if argv else package_root()
    graph = import_graph(root)
    found = cycles(graph)
    if not found:
        print(f"{root.name}: {len(graph)} modules, no import cycles")
        return 0
    print(f"{root.name}: {len(found)} import cycle(s) among {len(graph)} modules")
    for component in found:
        print(f"\ncycle of {len(component)} modules: {', '.join(component)}")
        for a, b in cycle_edges(component, graph):
            print(f"  {a} -> {b}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
