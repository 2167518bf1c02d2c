"""How much the default CPU schedules (tvm_autoglm.schedule_rules) buy without tuning.

Kernels (always): bert-base shaped matmuls, in GFLOP/s, for
  * plain     - the FuseTIR loop nest as tvm.compile lowers it untuned,
  * rules     - after apply_default_schedules,
  * numpy     - numpy's BLAS sgemm on the same shapes,
against the machine's fp32 peak (tvm_autoglm.measure.machine: a TVM FMA kernel).

Models (--models): end-to-end latency of zoo models compiled at O3 without a
tuning DB (default schedules only) vs onnxruntime, plus compile time.

    .venv/bin/python benchmarks/bench_default_schedules.py [--models bert:base,resnet50,gpt-neox:small] [--plain]

Timing is measure.harness's: interleaved rounds (rules / plain / numpy per kernel,
ours / onnxruntime per model) after waiting for an idle machine, rounds disturbed by
other processes dropped; onnxruntime at its fastest level with our thread count.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tvm
from tvm import relax

from tvm_autoglm.measure import harness
from tvm_autoglm.schedule_rules import apply_default_schedules
from tvm_autoglm.targets import load_target

KERNELS = {
    # name: (batch, M, K, N, epilogue)
    "dense 128x768x3072 +bias+gelu": (None, 128, 768, 3072, "bias_gelu"),
    "dense 128x768x3072": (None, 128, 768, 3072, None),
    "dense 128x768x768 +bias": (None, 128, 768, 768, "bias"),
    "batch matmul 12x128x64x128 (QK^T)": (12, 128, 64, 128, None),
    "batch matmul 12x128x128x64 (PV)": (12, 128, 128, 64, None),
}


def _kernel_module(batch, m, k, n, epilogue, seed=0):
    rng = np.random.default_rng(seed)
    a_shape = (batch, m, k) if batch else (1, m, k)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(a_shape, "float32"))
    params = [x]
    if batch:
        w = relax.Var("w", relax.TensorType((batch, k, n), "float32"))
        params.append(w)
        weight = w
        w_np = rng.standard_normal((batch, k, n)).astype("float32")
    else:
        w_np = rng.standard_normal((k, n)).astype("float32")
        weight = relax.const(w_np)
    with bb.function("main", params):
        with bb.dataflow():
            y = relax.op.matmul(x, weight)
            if epilogue:
                y = relax.op.add(y, relax.const(rng.standard_normal(n).astype("float32")))
            if epilogue == "bias_gelu":
                y = relax.op.nn.gelu(y)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    inputs = [rng.standard_normal(a_shape).astype("float32")] + ([w_np] if batch else [])
    return relax.get_pipeline("zero")(bb.get()), inputs, w_np


def _build_vm(mod, target, inputs):
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in inputs]
    return vm, args, vm["main"](*args).numpy()


def _race_kernel(label, mod_rules, mod_plain, target, inputs, w_np, repeat):
    """rules / plain / numpy on one shape, interleaved (measure.harness.race): {name: timing row}, rules output."""
    vm, args, out = _build_vm(mod_rules, target, inputs)
    a = inputs[0]
    prepared = [harness.vm_candidate("rules", vm, tvm.cpu(), args),
                harness.function_candidate("numpy", lambda: a @ w_np, pool="numpy", detail=f"numpy {np.__version__} BLAS")]
    result = harness.race(prepared, repeat=repeat, warmup=2, idle_wait=10.0)
    print(f"  {label}: {result.dropped}", flush=True)
    timed = {r["name"]: r for r in result.rows}
    if mod_plain is not None:  # untuned loop nests are orders of magnitude slower: a few runs, timed apart
        pvm, pargs, _ = _build_vm(mod_plain, target, inputs)
        timed["plain"] = harness.time_alone(harness.vm_candidate("plain", pvm, tvm.cpu(), pargs), repeat=3, warmup=1).summary()
    return timed, out


def bench_kernels(target, plain: bool, repeat: int) -> list[dict]:
    rows = []
    for name, (batch, m, k, n, epi) in KERNELS.items():
        mod, inputs, w_np = _kernel_module(batch, m, k, n, epi)
        flops = 2.0 * (batch or 1) * m * k * n
        row = {"kernel": name}
        timed, out = _race_kernel(name, apply_default_schedules(mod, target), mod if plain else None, target, inputs, w_np, repeat)
        row["rules_gflops"] = flops / (timed["rules"]["median_ms"] / 1e3) / 1e9
        row["rules_gflops_best"] = flops / (timed["rules"]["min_ms"] / 1e3) / 1e9
        if not epi:
            ref = inputs[0] @ w_np
            row["rules_max_abs_err"] = float(np.abs(out - ref).max())
        if plain:
            row["plain_gflops"] = flops / (timed["plain"]["median_ms"] / 1e3) / 1e9
        row["numpy_gflops"] = flops / (timed["numpy"]["median_ms"] / 1e3) / 1e9
        row["numpy_gflops_best"] = flops / (timed["numpy"]["min_ms"] / 1e3) / 1e9
        rows.append(row)
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) and v > 1e-3 else v) for k, v in row.items()}), flush=True)
    return rows


def bench_model(spec: str, repeat: int, plain: bool, threads: int) -> dict:
    from tvm_autoglm import api, zoo

    name, _, size = spec.partition(":")
    size = size or zoo.MODELS[name].sizes[0]
    path = zoo.cached(name, size)
    shapes = zoo.input_shapes(name, size)
    inputs = zoo.example_inputs(name, size)
    row = {"model": f"{name}:{size}", "onnx": str(path)}
    t0 = time.perf_counter()
    model = api.compile(str(path), "cpu", 3, shapes)
    row["compile_s_O3"] = time.perf_counter() - t0
    prepared = [harness.session_candidate("tvm", model, inputs), harness.ort_candidate(str(path), inputs, threads)]
    if plain:
        import tvm_autoglm.scheduling as scheduling

        saved = scheduling._apply_cpu_defaults  # pylint: disable=protected-access
        scheduling._apply_cpu_defaults = lambda mod, target: mod  # pylint: disable=protected-access
        try:
            plain_model = api.compile(str(path), "cpu", 3, shapes)
        finally:
            scheduling._apply_cpu_defaults = saved  # pylint: disable=protected-access
        # unscheduled kernels are orders of magnitude slower: timed apart, a few runs
        row["plain_ms"] = harness.time_alone(harness.session_candidate("plain", plain_model, inputs), repeat=2, warmup=1).summary()["median_ms"]
    result = harness.race(prepared, repeat=repeat, warmup=3, threads=threads)
    row["tvm_ms"] = result.median_ms("tvm")
    row["ort_ms"] = result.median_ms("onnxruntime")
    row["ort_detail"] = result.rows[1]["detail"]
    row["dropped"] = result.dropped
    row["ratio_vs_ort"] = row["tvm_ms"] / row["ort_ms"]
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma list of zoo name[:size], e.g. bert:base,resnet50")
    parser.add_argument("--plain", action="store_true", help="also time untuned plain kernels (slow)")
    parser.add_argument("--no-kernels", action="store_true")
    parser.add_argument("--repeat", type=int, default=10, help="clean interleaved rounds per kernel / model (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="threads for TVM, onnxruntime (default: physical cores)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)

    threads = harness.use_threads(args.threads)  # before any thread pool starts
    target = load_target("cpu").tvm_target()
    from tvm_autoglm.measure.machine import peak_gflops

    peak = peak_gflops(threads)
    print(json.dumps({"target": str(target), "peak": peak}), flush=True)
    results = {"target": str(target), "peak": peak, "kernels": [], "models": []}
    if not args.no_kernels:
        results["kernels"] = bench_kernels(target, args.plain, args.repeat)
    for spec in filter(None, args.models.split(",")):
        results["models"].append(bench_model(spec, args.repeat, args.plain, threads))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
