"""Untuned latency and kernel count per opt level (O0..O3), onnxruntime in the same run.

    .venv/bin/python benchmarks/bench_opt_levels.py                      # bert-base s128, gpt-neox base, resnet50 base
    .venv/bin/python benchmarks/bench_opt_levels.py --size tiny --seq 16 --models bert,gpt-neox,resnet50

"Untuned" = the default schedules the pipeline applies without a tuning
database. Kernels = distinct TIR kernels in the built module. All levels of a
model (and onnxruntime, same thread count) are built first and then timed
interleaved in one process (``tvm_autoglm.measure.harness.race``:
round-robin, order rotated, rounds in which a thread waited for a CPU
dropped and counted), so a drift of the shared machine hits every level
alike. Prints a table and writes JSON (--out). Zoo models are built once and
cached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvm_autoglm import zoo  # noqa: E402
from tvm_autoglm.measure import harness  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bert,gpt-neox,resnet50")
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--exporter", default="dynamo", choices=zoo.EXPORTERS)
    ap.add_argument("--levels", default="0,1,2,3")
    ap.add_argument("--repeat", type=int, default=10, help="clean interleaved rounds per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--slow-factor", type=float, default=20.0, help="a level whose first run is this many times the fastest is timed apart")
    ap.add_argument("--slow-repeat", type=int, default=3, help="plain runs of such a level")
    ap.add_argument("--threads", type=int, default=None, help="TVM and onnxruntime threads (default: physical cores)")
    ap.add_argument("--out", default="benchmarks/results/opt_levels.json")
    args = ap.parse_args(argv)
    threads = harness.use_threads(args.threads)  # before anything starts TVM's pool

    import tvm_autoglm

    rows = []
    for name in args.models.split(","):
        path = zoo.cached(name, args.size, args.seq, 1, args.exporter)
        shapes = zoo.input_shapes(name, args.size, args.seq, 1)
        inputs = zoo.example_inputs(name, args.size, args.seq, 1)
        ort = harness.ort_candidate(str(path), inputs, threads)
        expected = ort.outputs()
        candidates, info = [ort], [dict(model=name, level="onnxruntime", kernels=None, max_abs_diff=0.0, compile_s=None, detail=ort.detail)]
        for level in (int(x) for x in args.levels.split(",")):
            start = time.perf_counter()
            model = tvm_autoglm.compile(path, target="cpu", opt_level=level, input_shapes=shapes)
            compile_s = time.perf_counter() - start
            actual = model.run(inputs)
            diff = max(float(np.abs(np.asarray(actual[k]) - expected[k]).max()) for k in expected)
            candidates.append(harness.session_candidate(f"O{level}", model, inputs))
            info.append(dict(model=name, level=f"O{level}", kernels=len(model.build.kernels), max_abs_diff=diff, compile_s=compile_s))
        load = os.getloadavg()[0]
        # O0 (no fusion, no schedules) runs two orders of magnitude slower than the rest
        # (bert-base: about 57 s per inference): timed apart with a few plain runs so the
        # interleaved rounds of the others stay short. Its gap dwarfs any drift.
        for c in candidates:
            c.candidate.run()  # first call: lazy initialisation, thread-pool start
        first = [_once(c.candidate.run) for c in candidates]
        slow = {i for i, t in enumerate(first) if t > args.slow_factor * min(first)}
        fast = [c for i, c in enumerate(candidates) if i not in slow]
        raced = harness.race(fast, repeat=args.repeat, warmup=args.warmup, threads=threads)
        timed = dict(zip([i for i in range(len(candidates)) if i not in slow], raced.timings))
        for i in slow:
            timed[i] = harness.time_alone(candidates[i], args.slow_repeat)
        results = [timed[i] for i in range(len(candidates))]
        for i, (row, res) in enumerate(zip(info, results)):
            row.update(res.summary(), load1=load, threads=threads, interleaved=i not in slow)
            rows.append(row)
            kernels = f"kernels={row['kernels']:4d}" if row["kernels"] is not None else " " * 12
            note = "" if row["interleaved"] else f"  (timed apart: {row['runs']} plain runs)"
            print(f"{name:10s} {row['level']:12s} {kernels} {row['median_ms']:10.2f} ms  maxdiff={row['max_abs_diff']:.2e}{note}", flush=True)
        print(f"{name:10s} {raced.dropped}; load before timing {load:.2f}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(size=args.size, seq=args.seq, exporter=args.exporter, repeat=args.repeat, threads=threads, interleaved=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    tmp.replace(out)
    return 0


def _once(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
