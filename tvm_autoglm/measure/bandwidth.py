"""Streaming DRAM read bandwidth, measured: the ceiling of every memory-bound kernel.

A decode step of an LLM at batch 1 reads every weight once and does two flops per
weight, so its speed limit is ``bandwidth / weight bytes per token``, not the fp32
peak (``machine.peak_gflops``). A datasheet bandwidth means little on a shared VM,
so this module measures it the way a GEMV reads its weights: each of ``threads``
parallel tasks sums one contiguous chunk of an array several times larger than any
last-level cache, with independent vector accumulators (FMA latency never limits),
in a TVM-compiled kernel on TVM's own thread pool. The number is the median over
repeats (a shared machine has outliers both ways; the median is what a benchmark
run can expect).
"""

from __future__ import annotations

import time

import numpy as np

#: Array size: well over the L3 of any CPU we build on (32 MiB on the Zen 3/4/5 boxes).
DEFAULT_MIB = 256
CHAINS = 8  # independent vector accumulators per thread
LANES = 8  # fp32 lanes per vector; LLVM splits or joins them for the target's width


def _sum_kernel(elements: int, threads: int):
    """PrimFunc ``out[t, :] = sum of thread t's contiguous chunk of a`` (per-lane partial sums)."""
    from tvm.script import tirx as T

    width = CHAINS * LANES
    per_thread = elements // threads
    steps = per_thread // width

    @T.prim_func
    def stream_sum(a: T.Buffer((elements,), "float32"), out: T.Buffer((threads * width,), "float32")):
        T.func_attr({"global_symbol": "stream_sum", "tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((width,), "float32", scope="local")
            for j in T.unroll(CHAINS):
                for lane in T.vectorized(LANES):
                    acc[j * LANES + lane] = T.float32(0.0)
            for i in range(steps):
                for j in T.unroll(CHAINS):
                    for lane in T.vectorized(LANES):
                        acc[j * LANES + lane] = acc[j * LANES + lane] + a[t * per_thread + i * width + j * LANES + lane]
            for j in T.unroll(CHAINS):
                for lane in T.vectorized(LANES):
                    out[t * width + j * LANES + lane] = acc[j * LANES + lane]

    return stream_sum


def measure_read_bandwidth(threads: int | None = None, mib: int = DEFAULT_MIB, repeats: int = 15, target=None) -> dict:
    """Median streaming read bandwidth over ``repeats`` sums of a ``mib`` MiB array with ``threads`` tasks.

    Returns ``{"gb_per_s", "best_gb_per_s", "threads", "mib", "repeats", "method"}``
    (GB = 1e9 bytes). ``threads`` defaults to TVM's pool size (``TVM_NUM_THREADS``);
    more tasks than pool workers would serialise and read as a lower bandwidth.
    """
    import tvm

    from ..targets import load_target
    from .machine import tvm_threads

    threads = int(threads or tvm_threads())
    width = CHAINS * LANES
    elements = (mib * (1 << 20) // 4) // (threads * width) * (threads * width)
    if elements <= 0 or repeats < 1:
        raise ValueError(f"need mib >= 1 and repeats >= 1 (got mib={mib}, repeats={repeats})")
    target = target or load_target("cpu").tvm_target()
    lib = tvm.compile(tvm.IRModule({"stream_sum": _sum_kernel(elements, threads)}), target=target)
    data = tvm.runtime.tensor(np.ones(elements, dtype=np.float32))
    out = tvm.runtime.tensor(np.zeros(threads * width, dtype=np.float32))
    func = lib["stream_sum"]
    func(data, out)  # warm-up: page faults, thread pool start
    if not np.isclose(out.numpy().astype(np.float64).sum(), elements, rtol=1e-6):
        raise RuntimeError(f"bandwidth kernel summed {out.numpy().sum()} ones out of {elements}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(data, out)
        times.append(time.perf_counter() - start)
    nbytes = elements * 4
    return {
        "gb_per_s": round(nbytes / float(np.median(times)) / 1e9, 2),
        "best_gb_per_s": round(nbytes / min(times) / 1e9, 2),
        "threads": threads,
        "mib": mib,
        "repeats": repeats,
        "method": f"TVM sum of a {mib} MiB fp32 array, {threads} contiguous chunks in parallel, "
                  f"{CHAINS} vector accumulators each, median of {repeats}",
    }


def tokens_per_s_limit(weight_bytes_per_token: int, gb_per_s: float) -> float:
    """Decode tokens/s if every step did nothing but stream its weights at ``gb_per_s``."""
    return gb_per_s * 1e9 / weight_bytes_per_token if weight_bytes_per_token > 0 else float("inf")
