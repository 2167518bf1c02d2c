"""What machine a number was measured on, and how fast it can go.

Every published latency carries a machine line (CPU model, LLVM CPU name,
cores, threads used) and per-kernel GFLOP/s are positioned against a
*measured* fp32 peak rather than a datasheet one: on a shared VM the
datasheet clock is fiction. The peak is measured once per (CPU, threads) with
an FMA-bound TVM kernel (independent vector FMA chains in registers, one
chain block per thread) and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

FMA_CHAINS = 12  # independent accumulators: > FMA latency x FMA ports on Zen 3 (4 x 2), < 16 ymm registers
FMA_LANES = 8  # fp32 lanes of an AVX2 register
FMA_ITERS = 200_000  # ~1-2 ms a call: short enough that some of many trials find both cores free


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def llvm_cpu() -> str | None:
    """The ``mcpu`` the cpu target detected (e.g. znver3); None if detection fails."""
    try:
        from ..targets import load_target

        return load_target("cpu").tvm_config.get("mcpu")
    except Exception:
        return None


def core_counts() -> tuple[int, int]:
    """(physical cores, logical CPUs) available to this process."""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    physical = logical
    try:
        import psutil

        physical = min(logical, psutil.cpu_count(logical=False) or logical)
    except Exception:
        pass
    return physical, logical


def default_threads() -> int:
    return core_counts()[0]


def tvm_threads() -> int:
    """Threads TVM's pool really uses: ``TVM_NUM_THREADS`` if set, else TVM's own default.

    TVM's default on x86 is half the logical CPUs (it assumes SMT), which is
    1 thread on a 2-vCPU VM: the commands therefore set ``TVM_NUM_THREADS``
    explicitly (``use_threads``) before anything starts the pool.
    """
    value = os.environ.get("TVM_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        import tvm

        return int(tvm.get_global_func("runtime.NumThreads")())
    except Exception:
        return default_threads()


def use_threads(threads: int | None) -> int:
    """Set ``TVM_NUM_THREADS`` (default: physical cores) for pools not yet started; returns the count."""
    threads = int(threads) if threads else default_threads()
    if threads < 1:
        from ..errors import InputError

        raise InputError(f"--threads must be >= 1 (got {threads})")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return threads


def machine_info(threads: int | None = None) -> dict:
    physical, logical = core_counts()
    return {
        "cpu": cpu_model(),
        "llvm_cpu": llvm_cpu(),
        "physical_cores": physical,
        "logical_cpus": logical,
        "threads": threads if threads is not None else tvm_threads(),
        "platform": platform.platform(),
    }


def machine_line(info: dict) -> str:
    mcpu = f" ({info['llvm_cpu']})" if info.get("llvm_cpu") else ""
    return f"machine: {info['cpu']}{mcpu}, {info['physical_cores']} cores / {info['logical_cpus']} CPUs, {info['threads']} threads used"


def _cache_file() -> Path:
    root = os.environ.get("AUTOGLM_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tvm_autoglm")
    return Path(root) / "peak.json"


def _cache_key(threads: int) -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    digest = hashlib.sha256(f"{cpu_model()}|{llvm_cpu()}|{flags}".encode()).hexdigest()[:16]
    return f"{digest}-t{threads}"


def _fma_kernel(threads: int):
    from tvm.script import tirx as T

    chains, lanes, iters = FMA_CHAINS, FMA_LANES, FMA_ITERS

    @T.prim_func
    def fma(out: T.Buffer((threads * chains * lanes,), "float32")):
        T.func_attr({"global_symbol": "fma", "tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((chains * lanes,), "float32", scope="local")
            for j in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    acc[j * lanes + lane] = T.float32(1.0) + T.Cast("float32", lane) * T.float32(1e-3)
            for _k in range(iters):
                for j in T.unroll(chains):
                    for lane in T.vectorized(lanes):
                        acc[j * lanes + lane] = acc[j * lanes + lane] * T.float32(0.9999) + T.float32(1e-4)
            for j in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    out[t * chains * lanes + j * lanes + lane] = acc[j * lanes + lane]

    return fma


def measure_peak_gflops(threads: int | None = None, trials: int = 60) -> float:
    """fp32 FMA throughput (GFLOP/s) with ``threads`` parallel tasks on TVM's pool: best of ``trials``.

    Pass the pool's real size (``tvm_threads()``): more tasks than workers just
    serialises them and reads as a lower peak.
    """
    import numpy as np
    import tvm

    from ..targets import load_target

    threads = threads or tvm_threads()
    lib = tvm.compile(tvm.IRModule({"fma": _fma_kernel(threads)}), target=load_target("cpu").tvm_target())
    out = tvm.runtime.tensor(np.zeros(threads * FMA_CHAINS * FMA_LANES, dtype=np.float32))
    func = lib["fma"]
    func(out)
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        func(out)
        best = min(best, time.perf_counter() - start)
    flops = 2.0 * threads * FMA_CHAINS * FMA_LANES * FMA_ITERS
    return flops / best / 1e9


def parallel_peak_is_plausible(gflops: float, threads: int, measure: Callable[[int], float]) -> bool:
    """Whether ``threads`` threads reached at least 80 % of ``threads`` x one thread's peak.

    One thread needs only one free core to measure its peak; the parallel
    measurement needs all of them at once, and falls short when another
    process holds one.
    """
    if threads <= 1:
        return True
    return gflops >= 0.8 * threads * measure(1)


def peak_gflops(threads: int | None = None, refresh: bool = False) -> dict:
    """Cached measured peak: {"gflops", "threads", "method", "measured"}."""
    threads = threads or tvm_threads()
    path, key = _cache_file(), _cache_key(threads)
    cache: dict = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and cache[key].get("gflops"):
        return cache[key]
    entry = {
        "gflops": round(measure_peak_gflops(threads), 2),
        "threads": threads,
        "method": f"TVM FMA kernel: {FMA_CHAINS} independent fp32x{FMA_LANES} FMA chains per thread, best of 60 calls",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not parallel_peak_is_plausible(entry["gflops"], threads, measure_peak_gflops):
        # A busy machine: every call shared a core. Report it, but do not cache it (a cached
        # 101 GFLOP/s on this 206 GFLOP/s box put every kernel above "100 % of peak").
        entry["method"] += "; machine busy while measuring, not cached"
        return entry
    cache[key] = entry
    try:
        from ..runtime.manifest import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return entry
