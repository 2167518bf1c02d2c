"""What the offload pass needs to know about the NPU, taken from a target and passed as arguments.

Apart from ``config`` (the machine description, a leaf module) because it opens tuning
records (``ms_tune``), which ``config`` must not import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import TargetError
from .config import Machine, machine_from

ROUTES = ("tensorize", "program")
# when the target file has no "route": the measured better one (docs/npu.md, "The TensorIntrin route")
DEFAULT_ROUTE = "tensorize"


@dataclass(frozen=True)
class NpuSettings:
    """Everything the offload pass needs to know about the NPU, passed as arguments.

    ``records`` (an ``ms_tune.TileRecords``, or None) answers tile/block choices from a
    MetaSchedule database; without it the exhaustive search chooses.
    """

    machine: Machine
    route: str = DEFAULT_ROUTE
    records: object | None = None


def route_from(extra: dict | None) -> str:
    """The target file's ``npu.route`` (default ``DEFAULT_ROUTE``), checked."""
    route = ((extra or {}).get("npu") or {}).get("route", DEFAULT_ROUTE)
    if route not in ROUTES:
        raise TargetError(f"npu-sim: \"route\" must be one of {', '.join(ROUTES)} (got {route!r})")
    return route


def settings_for(spec, tuning_db=None) -> NpuSettings:
    """The NPU settings of a target (a TargetSpec) compiled with ``tuning_db`` (a records folder or None)."""
    records = None
    if tuning_db is not None:
        from .ms_tune.records import TileRecords

        records = TileRecords(tuning_db)
    return NpuSettings(machine_from(spec.extra), route_from(spec.extra), records)


def default_settings() -> NpuSettings:
    """The settings of targets/npu-sim.json, for direct calls of the offload without a target."""
    from ..targets import load_target

    return settings_for(load_target("npu-sim"))


def with_npu(spec, **fields):
    """A copy of an NPU TargetSpec with fields of its ``npu`` section replaced (e.g. ``cores=4``, ``route="program"``)."""
    npu = {**(spec.extra.get("npu") or {}), **fields}
    return replace(spec, extra={**spec.extra, "npu": npu})
