"""The machine description: the ``npu`` section of targets/npu-sim.json."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import TargetError


@dataclass(frozen=True)
class Machine:
    clock_mhz: float
    cores: int
    tile: int
    scratchpad: dict
    dram_bytes_per_cycle: int
    dram_total_bytes_per_cycle: int
    latency: dict
    macs_per_cycle_per_core: int

    def with_cores(self, cores: int) -> "Machine":
        return replace(self, cores=int(cores))


DEFAULT = {
    "clock_mhz": 1000,
    "cores": 1,
    "gemm_tile": {"m": 16, "n": 16, "k": 16},
    "scratchpad_bytes": {"input": 32768, "weight": 262144, "accumulator": 131072},
    "dram_bytes_per_cycle": 32,
    "dram_total_bytes_per_cycle": 256,
    "latency_cycles": {"gemm_tile": 16, "vector_row": 1, "dma_setup": 20, "sync": 4},
}


def machine_from(extra: dict | None) -> Machine:
    """Machine parameters from a TargetSpec's ``extra`` (or a raw ``npu`` dict)."""
    npu = dict(DEFAULT)
    section = (extra or {}).get("npu", extra or {})
    npu.update(section or {})
    tile = npu["gemm_tile"]
    if not (tile.get("m") == tile.get("n") == tile.get("k") == 16):
        raise TargetError("npu-sim: only a 16x16x16 GEMM tile is implemented by the simulator")
    latency = {**DEFAULT["latency_cycles"], **npu.get("latency_cycles", {})}
    scratch = {**DEFAULT["scratchpad_bytes"], **npu.get("scratchpad_bytes", {})}
    cores = int(npu.get("cores", 1))
    if not 1 <= cores <= 16:
        raise TargetError(f"npu-sim: cores must be 1..16 (got {cores})")
    return Machine(
        clock_mhz=float(npu["clock_mhz"]),
        cores=cores,
        tile=16,
        scratchpad={k: int(v) for k, v in scratch.items()},
        dram_bytes_per_cycle=int(npu["dram_bytes_per_cycle"]),
        dram_total_bytes_per_cycle=int(npu.get("dram_total_bytes_per_cycle", DEFAULT["dram_total_bytes_per_cycle"])),
        latency={k: int(v) for k, v in latency.items()},
        # a 16x16 MAC array finishing one 16x16x16 tile in gemm_tile cycles
        macs_per_cycle_per_core=16 * 16 * 16 // max(1, int(latency["gemm_tile"])),
    )


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
        from .ms_tune import TileRecords

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
