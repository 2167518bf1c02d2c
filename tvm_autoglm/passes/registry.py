"""The registry of our graph passes, keyed by name and opt level.

Each pass module registers a factory with ``@register_pass``; the pipeline asks
``passes_for(opt_level, target_kind, disabled)`` for the ordered list. The
``stage`` number orders passes across files (lower runs first) so a module can
say "after constant folding, before fusion" without importing the others.

Opt levels (see README): O0 import + lowering only; O1 constant folding +
FuseOps/FuseTIR; O2 adds the rewrite passes (BN folding, epilogue fusion,
idioms, attention); O3 adds QKV merging and layout changes.
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
    """A registered pass: ``make()`` returns a fresh ``tvm.transform.Pass``."""

    name: str
    opt_level: int
    stage: int
    make: Callable[[], tvm.transform.Pass]
    target_kinds: tuple[str, ...]
    description: str


_REGISTRY: dict[str, PassSpec] = {}


def register_pass(
    name: str,
    *,
    opt_level: int,
    stage: int,
    target_kinds: tuple[str, ...] = ("cpu", "cuda", "npu"),
):
    """Decorator for a zero-argument factory returning a Relax module pass."""

    def wrap(factory: Callable[[], tvm.transform.Pass]):
        if name in _REGISTRY:
            raise ValueError(f"pass '{name}' registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PassSpec(name, opt_level, stage, factory, tuple(target_kinds), doc[0] if doc else "")
        return factory

    return wrap


def all_passes() -> list[PassSpec]:
    _load_builtin_passes()
    return sorted(_REGISTRY.values(), key=lambda p: (p.stage, p.name))


def get_pass(name: str) -> PassSpec:
    _load_builtin_passes()
    if name not in _REGISTRY:
        raise AutoGLMError(f"unknown pass '{name}'; known passes: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def passes_for(opt_level: int, target_kind: str, disabled: tuple[str, ...] = ()) -> list[PassSpec]:
    """The passes to run at ``opt_level`` on ``target_kind``, in order."""
    for name in disabled:
        get_pass(name)  # unknown names are an error, not silently ignored
    return [
        p
        for p in all_passes()
        if p.opt_level <= opt_level and target_kind in p.target_kinds and p.name not in disabled
    ]


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
        if info.name.startswith("_") or info.name == "registry":
            continue
        importlib.import_module(f"{__package__}.{info.name}")
