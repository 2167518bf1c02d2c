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

