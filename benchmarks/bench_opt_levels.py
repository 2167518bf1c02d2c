"""Untuned latency and kernel count per opt level (O0..O3), onnxruntime in the same run.

    .venv/bin/python benchmarks/bench_opt_levels.py                      # bert-base s128, gpt-neox base, resnet50 base
    .venv/bin/python benchmarks/bench_opt_levels.py --size tiny --seq 16 --models bert,gpt-neox,resnet50

"Untuned" = the default schedules the pipeline applies without a tuning
database. Kernels = distinct TIR kernels in the built module. Prints a table
and writes JSON (--out). Zoo models are built once and cached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tvm_autoglm  # noqa: E402
from tvm_autoglm import zoo  # noqa: E402


def ort_latency(path, inputs, repeat: int, warmup: int) -> tuple[float, list]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        out = sess.run(None, inputs)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = sess.run(None, inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bert,gpt-neox,resnet50")
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--exporter", default="dynamo", choices=zoo.EXPORTERS)
    ap.add_argument("--levels", default="0,1,2,3")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/opt_levels.json")
    args = ap.parse_args(argv)

    rows = []
    for name in args.models.split(","):
        path = zoo.cached(name, args.size, args.seq, 1, args.exporter)
        shapes = zoo.input_shapes(name, args.size, args.seq, 1)
        inputs = zoo.example_inputs(name, args.size, args.seq, 1)
        ort_ms, expected = ort_latency(path, inputs, args.repeat, args.warmup)
        rows.append(dict(model=name, level="onnxruntime", kernels=None, median_ms=ort_ms, max_abs_diff=0.0, compile_s=None))
        print(f"{name:10s} onnxruntime      {ort_ms:10.2f} ms", flush=True)
        for level in (int(x) for x in args.levels.split(",")):
            start = time.perf_counter()
            model = tvm_autoglm.compile(path, target="cpu", opt_level=level, input_shapes=shapes)
            compile_s = time.perf_counter() - start
            actual = model.run(inputs)
            diff = max(float(np.abs(np.asarray(a) - e).max()) for a, e in zip(actual.values(), expected))
            times = model._session.latencies(inputs, repeat=args.repeat, warmup=args.warmup)
            ms = statistics.median(times) * 1000
            kernels = len(model.build.kernels)
            rows.append(dict(model=name, level=f"O{level}", kernels=kernels, median_ms=ms, max_abs_diff=diff, compile_s=compile_s))
            print(f"{name:10s} O{level}  kernels={kernels:4d} {ms:10.2f} ms  maxdiff={diff:.2e}  compile={compile_s:.1f}s", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(size=args.size, seq=args.seq, exporter=args.exporter, repeat=args.repeat)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
