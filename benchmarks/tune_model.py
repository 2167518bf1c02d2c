"""`make tune MODEL=bert`: tune a zoo model, then compare untuned / tuned / onnxruntime.

    .venv/bin/python benchmarks/tune_model.py --model bert --size base --seq 128 --target cpu --out out

Steps: build the zoo model; compile it untuned (no database, no shipped
schedules); tune it (starting from the shipped schedules, default budget 20
minutes so the whole command stays under 30 on 2 cores); compile with the
records; export the tuned library; then time all three *interleaved* in the
same process (rounds of each in turn, so a noisy neighbour hits all three
alike) and print one table. The tuning curve (estimated latency of the tuned
kernels vs trials) is saved as a PNG beside the library.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plot_curve(curve: list[dict], path: Path, title: str, untuned_ms: float | None = None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [(p["trials"], p["estimated_ms"]) for p in curve if p.get("estimated_ms") is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label="estimated (tuned kernels, sum of best x calls)")
    ax.set_xlabel("trials")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    import numpy as np

    import tvm_autoglm
    from tvm_autoglm import zoo
    from tvm_autoglm.measure import harness
    from tvm_autoglm.native_log import quiet_native_stderr
    from tvm_autoglm.targets import load_target

    ap = argparse.ArgumentParser(description="tune a zoo model and compare untuned / tuned / onnxruntime")
    ap.add_argument("--model", default="bert", choices=sorted(zoo.MODELS))
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--out", default="out")
    ap.add_argument("--trials", type=int, default=None, help="trial budget (default: none, the time budget rules)")
    ap.add_argument("--time-budget", default="20m", help="tuning wall time (default 20m)")
    ap.add_argument("--tuning-db", default=None, help="database folder (default: OUT/tuning-<target>, resumable)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (x --repeat: clean runs per engine)")
    ap.add_argument("--repeat", type=int, default=4, help="(x --rounds) clean runs per engine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="threads for TVM and onnxruntime (default: physical cores)")
    args = ap.parse_args(argv)
    threads = harness.use_threads(args.threads)  # before any thread pool starts

    spec = load_target(args.target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}-{args.size}" + (f"-s{args.seq}" if zoo.MODELS[args.model].uses_seq else "") + f"-b{args.batch}"
    print(f"[tune_model] {tag} on {spec.name} ({spec.tvm_target()})", file=sys.stderr, flush=True)
    path = str(zoo.cached(args.model, args.size, seq=args.seq, batch=args.batch))

    t0 = time.monotonic()
    untuned = tvm_autoglm.compile(path, args.target, use_shipped_schedules=False)
    db = Path(args.tuning_db) if args.tuning_db else out / f"tuning-{spec.name}"
    result = tvm_autoglm.tune(path, args.target, trials=args.trials, time_budget=args.time_budget if args.trials is None else None,
                              tuning_db=db, seed=args.seed, label=f"tune {args.model}")
    tuned = tvm_autoglm.compile(path, args.target, tuning_db=str(db))
    lib = out / f"{tag}-{spec.name}-tuned.so"
    with quiet_native_stderr():
        tuned.export(str(lib))

    inputs = zoo.example_inputs(args.model, args.size, seq=args.seq, batch=args.batch, seed=args.seed)
    # Same inputs, same answers: tuning changes schedules, never results.
    ref = harness.ort_candidate(path, inputs, threads)
    want = ref.outputs()
    got = tuned.run(**inputs)
    max_err = max(float(np.max(np.abs(np.asarray(got[k], dtype=np.float64) - want[k]))) for k in want if k in got)

    engines = {
        "untuned (default schedules)": harness.session_candidate("untuned (default schedules)", untuned, inputs),
        "tuned": harness.session_candidate("tuned", tuned, inputs),
        "onnxruntime": ref,
    }
    # The harness's race: one run of each engine per round, order rotated; a switch between
    # onnxruntime and our builds waits out the previous runtime's spinning workers; rounds in
    # which a thread waited for a CPU are dropped.
    timed = harness.race(list(engines.values()), repeat=args.rounds * args.repeat, warmup=2, threads=threads)
    med = {row["name"]: row["median_ms"] for row in timed.rows}

    ort_ms = med["onnxruntime"]
    rows = [(k, med[k], med["untuned (default schedules)"] / med[k], med[k] / ort_ms) for k in engines]
    tuning = tuned.manifest["tuning"]
    print()
    print(f"{tag} on {spec.name}: {result.trials} trials this run ({result.stop_reason}, {result.elapsed_s / 60:.1f} min), "
          f"{tuning['tuned_kernels']} tuned / {tuning['default_scheduled_kernels']} default-scheduled / {tuning['plain_kernels']} plain kernels")
    print(f"| engine | median ms | speed-up vs untuned | x onnxruntime |")
    print(f"|---|---:|---:|---:|")
    for name, ms_, sp, vs in rows:
        print(f"| {name} | {ms_:.2f} | {sp:.2f}x | {vs:.2f} |")
    print(f"(median of {args.rounds * args.repeat} interleaved runs each; max |tuned - onnxruntime| = {max_err:.2e}; library {lib})")

    curve_png = out / f"{tag}-{spec.name}-tuning-curve.png"
    plotted = plot_curve(result.curve, curve_png, f"{tag} on {spec.name}: estimated latency of tuned kernels")
    summary = {"model": tag, "target": spec.name, "tune": result.to_json(), "median_ms": med, "manifest_tuning": tuning,
               "max_abs_err_vs_onnxruntime": max_err, "library": str(lib), "curve_png": str(curve_png) if plotted else None,
               "wall_s": round(time.monotonic() - t0, 1)}
    (out / f"{tag}-{spec.name}-tune.json").write_text(json.dumps(summary, indent=1) + "\n")
    if plotted:
        print(f"tuning curve: {curve_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
