"""Every ``from tvm_autoglm... import name`` in the package names something that exists.

In-function imports are only checked when the function runs, so a helper moved
to another module leaves a stale import that fails at run time (found after the
ir_utils move: ``tuning.apply`` still imported ``is_scheduled`` from
``schedule_rules._common``; every CLI compile failed with an internal error).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import tvm_autoglm

PACKAGE = Path(tvm_autoglm.__file__).parent


def _module_name(path: Path) -> tuple[str, str]:
    parts = ("tvm_autoglm",) + path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path):
    module, package = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("tvm_autoglm"):
                yield node.lineno, target, [a.name for a in node.names if a.name != "*"]


def test_every_import_of_our_own_names_resolves():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, target, names in _imports(path):
            try:
                module = importlib.import_module(target)
            except ImportError as err:
                broken.append(f"{path.relative_to(PACKAGE)}:{line}: {target}: {err}")
                continue
            for name in names:
                if hasattr(module, name):
                    continue
                try:
                    importlib.import_module(f"{target}.{name}")
                except ImportError:
                    broken.append(f"{path.relative_to(PACKAGE)}:{line}: {target} has no {name!r}")
    assert not broken, "\n".join(broken)
