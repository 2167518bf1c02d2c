"""Reading the simulator's global counters out of a loaded model.

An exported model carries its own copy of the simulator, reached through the
module's ``npu_counters_address`` FFI function (works for ``.so`` and for a
``.glm`` unpacked to a temporary name); a model run in-process straight from
``tvm.compile`` uses the shared simulator library instead.
"""

from __future__ import annotations

import ctypes

MAX_OPS = 4096
SCRATCHPADS = ("input", "weight", "accumulator")


class OpStats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("op_id", "calls", "cycles", "macs", "macs_issued", "gemm_cycles", "valu_cycles")] + [
        ("dma_bytes", ctypes.c_int64 * 4)
    ] + [(name, ctypes.c_int64) for name in ("m", "n", "k", "batch", "cores")]


class Counters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("version", "errors", "ops_executed", "total_cycles", "macs", "macs_issued")] + [
        ("dma_bytes", ctypes.c_int64 * 4),
        ("peak_bytes", ctypes.c_int64 * 3),
        ("num_ops", ctypes.c_int64),
        ("insns", ctypes.c_int64),
        ("ops", OpStats * MAX_OPS),
    ]


class CounterHandle:
    """Live view of one simulator instance's counters."""

    def __init__(self, address: int, reset):
        self._counters = Counters.from_address(address)
        self._reset = reset

    def reset(self) -> None:
        self._reset()

    def snapshot(self) -> dict:
        c = self._counters
        ops = []
        for i in range(min(c.num_ops, MAX_OPS)):
            s = c.ops[i]
            if s.calls == 0:
                continue
            ops.append({
                "op_id": s.op_id, "calls": s.calls, "cycles": s.cycles, "macs": s.macs, "macs_issued": s.macs_issued,
                "gemm_cycles": s.gemm_cycles, "valu_cycles": s.valu_cycles,
                "dma_bytes": dict(zip(SCRATCHPADS + ("store",), list(s.dma_bytes))),
                "m": s.m, "n": s.n, "k": s.k, "batch": s.batch, "cores": s.cores,
            })
        return {
            "errors": c.errors, "ops_executed": c.ops_executed, "total_cycles": c.total_cycles, "macs": c.macs,
            "macs_issued": c.macs_issued, "instructions": c.insns,
            "dma_bytes": dict(zip(SCRATCHPADS + ("store",), list(c.dma_bytes))),
            "peak_bytes": dict(zip(SCRATCHPADS, list(c.peak_bytes))),
            "ops": ops,
        }


def _global_handle() -> CounterHandle:
    from . import build

    lib = build.global_library()
    lib.npu_counters_ptr.restype = ctypes.c_void_p
    lib.npu_counters_size.restype = ctypes.c_int64
    if lib.npu_counters_size() != ctypes.sizeof(Counters):
        raise RuntimeError("npu-sim counters layout differs between C and Python")
    return CounterHandle(lib.npu_counters_ptr(), lib.npu_counters_reset)


def for_module(module) -> CounterHandle:
    """Counters of the simulator linked into ``module`` (a loaded model), else the shared one."""
    get = getattr(module, "get_function", None)
    if get is not None:
        try:
            address = get("npu_counters_address", query_imports=True)
            reset = get("npu_counters_reset", query_imports=True)
        except Exception:  # in-memory executables have no such symbol: they use the shared library
            address = None
        if address is not None:
            return CounterHandle(int(address()), lambda: reset())
    return _global_handle()


def global_counters() -> CounterHandle:
    return _global_handle()
