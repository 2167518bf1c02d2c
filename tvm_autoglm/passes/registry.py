"""The registry of our graph passes: name -> factory, nothing else.

Each pass module registers a factory with ``@register_pass``. Which passes run,
at which opt level, for which backend and in which order is ``plan.py``'s job,
written there as explicit lists so the order can be read in one place.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tvm

from ..errors import AutoGLMError


@dataclass(frozen=True)
class PassSpec:
    """A registered pass: ``make()`` returns a fresh ``tvm.transform.Pass``
    (a backend may pass settings of its own, e.g. ``npu_offload(settings)``)."""

    name: str
    make: Callable[..., tvm.transform.Pass]
    description: str


_REGISTRY: dict[str, PassSpec] = {}


def register_pass(name: str):
    """Decorator for a factory returning a Relax module pass (callable with no arguments)."""

    def wrap(factory: Callable[..., tvm.transform.Pass]):
        if name in _REGISTRY:
            raise ValueError(f"pass '{name}' registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PassSpec(name, factory, doc[0] if doc else "")
        return factory

    return wrap


def all_passes() -> list[PassSpec]:
    """Every registered pass, by name."""
    _load_builtin_passes()
    return sorted(_REGISTRY.values(), key=lambda p: p.name)


def get_pass(name: str) -> PassSpec:
    _load_builtin_passes()
    if name not in _REGISTRY:
        raise AutoGLMError(f"unknown pass '{name}'; known passes: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


_LOADED = False


def _load_builtin_passes() -> None:
    """Import every module in tvm_autoglm.passes so their decorators run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # The package's own folder and name, not ``from .. import passes``: the package
    # imports this module, so importing the package back from here was a cycle.
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name in ("registry", "plan"):
            continue
        importlib.import_module(f"{__package__}.{info.name}")
