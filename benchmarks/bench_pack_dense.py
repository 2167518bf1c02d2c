"""A/B of ``pack_dense_weights``: weights packed at compile time vs the Matmul rule's in-kernel panel copy.

    nice -n 0 .venv/bin/python benchmarks/bench_pack_dense.py                 # bert-base s128 + its matmul kernels
    .venv/bin/python benchmarks/bench_pack_dense.py --size tiny --seq 16 --no-kernels

Model rows: the zoo model compiled at O3 (untuned default schedules) with and
without ``--disable-pass pack_dense_weights``. Kernel rows: bert-base's matmul
shapes alone (x[1, seq, K] @ W[K, N] + bias, with gelu on the FFN up
projection, as fused in the model), built through the same pass + fusion +
default schedules. Each group is timed interleaved in one process
(``measure.harness.race``: round-robin, order rotated, rounds in which a thread
waited for a CPU dropped and counted); the load average is printed before
each group.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvm_autoglm import zoo  # noqa: E402
from tvm_autoglm.measure import harness  # noqa: E402

#: (label, K, N, activation) of bert-base's projections (QKV merged at O3).
KERNELS = (("qkv", 768, 2304, None), ("attn_out", 768, 768, None), ("ffn_up+gelu", 768, 3072, "gelu"), ("ffn_down", 3072, 768, None))


def model_candidates(name: str, size: str, seq: int):
    import tvm_autoglm
    path = zoo.cached(name, size, seq, 1)
    shapes = zoo.input_shapes(name, size, seq, 1)
    inputs = zoo.example_inputs(name, size, seq, 1)
    cands, outs = [], []
    for label, disabled in (("packed", ()), ("in-kernel", ("pack_dense_weights",))):
        model = tvm_autoglm.compile(path, target="cpu", opt_level=3, input_shapes=shapes, disabled_passes=disabled)
        outs.append(model.run(inputs))
        cands.append(harness.session_candidate(f"{name}-{size} s{seq} {label}", model, inputs))
    diff = max(float(np.abs(np.asarray(outs[0][k]) - np.asarray(outs[1][k])).max()) for k in outs[0])
    return cands, diff


def kernel_candidates(seq: int, k: int, n: int, act: str | None, label: str):
    import tvm
    from tvm import relax

    from tvm_autoglm.passes.pack_dense_weights import pack_dense_weights
    from tvm_autoglm.schedule_rules import apply_default_schedules
    from tvm_autoglm.targets import load_target

    spec = load_target("cpu")
    target = spec.tvm_target()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype("float32")
    b = rng.standard_normal(n).astype("float32")
    x = rng.standard_normal((1, seq, k)).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, seq, k), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = relax.op.add(bb.emit(relax.op.matmul(xv, relax.const(w))), relax.const(b))
            if act == "gelu":
                y = relax.op.nn.gelu(bb.emit(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    base = bb.get()
    cands, outs = [], []
    for name, packed in (("packed", True), ("in-kernel", False)):
        with target:
            mod = pack_dense_weights()(base) if packed else base
            mod = apply_default_schedules(relax.get_pipeline("zero")(mod), target)
        vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
        arrays = [tvm.runtime.tensor(x)]
        outs.append(vm["main"](*arrays).numpy())
        cands.append(harness.vm_candidate(f"{label} [{seq}x{k}]x[{k}x{n}] {name}", vm, tvm.cpu(), arrays))
    return cands, float(np.abs(outs[0] - outs[1]).max())


def _time(cands, diff, repeat, warmup):
    load = os.getloadavg()
    result = harness.race(cands, repeat=repeat, warmup=warmup, idle_wait=10.0)
    medians = [r["median_ms"] for r in result.rows]
    for s in result.rows:
        print(f"  {s['name']:48s} median {s['median_ms']:9.3f} ms  min {s['min_ms']:9.3f}  p90 {s['p90_ms']:9.3f}", flush=True)
    print(f"  in-kernel / packed = {medians[1] / medians[0]:.3f}x; max |diff| {diff:.2e}; load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{result.dropped}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert")
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="TVM threads (default: physical cores)")
    ap.add_argument("--no-kernels", action="store_true", help="only the whole model")
    args = ap.parse_args(argv)
    threads = harness.use_threads(args.threads)
    print(f"threads={threads} repeat={args.repeat}", flush=True)
    if not args.no_kernels:
        for label, k, n, act in KERNELS:
            _time(*kernel_candidates(args.seq, k, n, act, label), args.repeat * 3, args.warmup)
    _time(*model_candidates(args.model, args.size, args.seq), args.repeat, args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
