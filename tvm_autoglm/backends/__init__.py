"""Backends: what each kind of target adds to the one compile flow (see ``base.Backend``).

``for_target(spec)`` is the only place that looks at a target's kind; everything
else asks the backend it returns. A new kind of target is one module here plus
its pass list in ``passes/plan.py`` (docs/architecture.md).
"""

from __future__ import annotations

from .base import Backend
from .cpu import CpuBackend
from .cuda import CudaBackend
from .npu import NpuBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (CpuBackend(), CudaBackend(), NpuBackend())}


def for_kind(kind: str) -> Backend:
    """The backend called ``kind`` (a target file's ``backend``, a manifest's ``target.kind``)."""
    from ..errors import TargetError

    try:
        return BACKENDS[kind]
    except KeyError:
        raise TargetError(f"no backend '{kind}'; known backends: {', '.join(sorted(BACKENDS))}") from None


def for_target(spec) -> Backend:
    """The backend that compiles for ``spec`` (a TargetSpec)."""
    return for_kind(spec.kind)


def for_manifest(manifest: dict) -> Backend:
    """The backend an artifact was built by (its manifest's ``target.kind``; cpu for old manifests)."""
    target = manifest.get("target", {})
    return for_kind(target.get("kind", target.get("device", "cpu")))


__all__ = ["BACKENDS", "Backend", "CpuBackend", "CudaBackend", "NpuBackend", "for_kind", "for_manifest", "for_target"]
