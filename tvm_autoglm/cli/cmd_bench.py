"""``auto-glm bench``: latency of an artifact against onnxruntime, OpenVINO, PyTorch or other artifacts.

All candidates run in the same time window, interleaved round-robin after
warm-up, on identical inputs, with the same thread count; runs disturbed by
other processes (run-queue wait) are dropped and counted.
"""

from __future__ import annotations

import json


def add_parser(subparsers):
    parser = subparsers.add_parser("bench", help="latency of a compiled .so/.glm vs onnxruntime / PyTorch / other builds")
    parser.add_argument("--binary", required=True, help="OUT.so (manifest beside it) or OUT.glm: the first candidate, the ratio base")
    parser.add_argument("--vs", action="append", default=[], metavar="ort|openvino|openvino-f32|torch|OTHER.so",
                        help="a competitor (repeatable); openvino = OpenVINO f32 and its default precision (bf16 on CPUs with AVX512-BF16)")
    parser.add_argument("--model", default=None, help="ONNX model for --vs ort/torch (default: the manifest's source path)")
    parser.add_argument("--input", default=None, help="IN.npz keyed by input name (default: generated example inputs)")
    parser.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: physical cores)")
    parser.add_argument("--repeat", type=int, default=30, help="clean timed runs per candidate (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per candidate first (default 3)")
    parser.add_argument("--idle-wait", type=float, default=30.0, metavar="S", help="wait at most S seconds for the machine to go idle (default 30)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--generate", action="store_true", help="generator artifact: prefill ms and decode tokens/s (with --prompt, --new)")
    parser.add_argument("--prompt", type=int, default=128, help="--generate: prompt tokens (default 128)")
    parser.add_argument("--new", type=int, default=128, help="--generate: new tokens (default 128)")
    return parser


def bench(binary: str, vs: list[str], model: str | None = None, inputs: dict | None = None, threads: int | None = None,
          repeat: int = 30, warmup: int = 3, idle_wait: float = 30.0, log=print) -> dict:
    """The measurement behind the command (also used by benchmarks/run_benchmarks.py)."""
    import numpy as np

    from ..errors import InputError
    from ..measure import candidates as cands
    from ..measure import harness
    from ..measure.machine import use_threads
    from ..runtime import example_inputs, read_manifest
    from ..runtime.manifest import manifest_path_for

    threads = use_threads(threads)  # before any TVM thread pool starts
    if repeat < 3:
        raise InputError(f"--repeat must be at least 3 (got {repeat})")
    first = cands.tvm_candidate(binary, inputs or {}, name=None) if inputs else None
    if first is None:
        from ..native_log import quiet_native_stderr
        from ..runtime import Session

        with quiet_native_stderr():
            opened = Session.open(binary)
        inputs = example_inputs(opened.input_specs, index_ranges=opened.index_ranges)
        del opened  # the candidate loads its own copy; do not hold a second during timing
        first = cands.tvm_candidate(binary, inputs)
    manifest = _manifest_of(binary, read_manifest, manifest_path_for)
    model = model or (manifest or {}).get("source")

    # the ONNX model still takes the inputs this build froze: peers get them at their frozen values
    frozen = {f["name"]: np.asarray(f["value"], dtype=f["dtype"]) for f in (manifest or {}).get("frozen_inputs") or []}
    prepared = [first]
    notes: list[str] = []
    for item in vs:
        if item.endswith((".so", ".glm")):
            prepared.append(cands.tvm_candidate(item, inputs))
        else:
            prepared.extend(harness.peer_candidates([item], model, {**inputs, **frozen}, threads, notes))
    # each candidate names its thread pool: a switch to onnxruntime / torch waits for the other pool's spinners
    result = harness.race(prepared, repeat=repeat, warmup=warmup, idle_wait=idle_wait, threads=threads, log=log)
    result.notes.extend(notes)
    return {**result.to_json(), "model": model}


def _manifest_of(binary, read_manifest, manifest_path_for):
    from pathlib import Path

    if Path(binary).suffix == ".glm":
        from ..runtime import resolve_artifact

        return resolve_artifact(binary)[1]
    try:
        return read_manifest(manifest_path_for(binary))
    except Exception:
        return None


def format_result(result: dict) -> str:
    from ..measure.machine import machine_line

    width = max(len(r["name"]) for r in result["candidates"])
    lines = [f"{'candidate':<{width}}  {'median ms':>10} {'min':>9} {'max':>9} {'p90':>9}  {'x first':>7}  runs"]
    for r in result["candidates"]:
        lines.append(
            f"{r['name']:<{width}}  {r['median_ms']:10.3f} {r['min_ms']:9.3f} {r['max_ms']:9.3f} {r['p90_ms']:9.3f}  {r['ratio_to_first']:7.3f}  {r['runs']}"
        )
    lines.append("ratio = median / median of the first; < 1 is faster than the first")
    for r in result["candidates"]:
        lines.append(f"  {r['name']}: {r['detail']}")
    lines.append(machine_line(result["machine"]))
    lines.append(result["dropped"])
    lines.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(lines)


def run(args) -> int:
    import sys

    if args.generate:
        from .cmd_generate import bench_generator

        return bench_generator(args)
    inputs = None
    if args.input:
        from ..native_log import quiet_native_stderr
        from ..runtime import Session, read_inputs

        with quiet_native_stderr():
            specs = Session.open(args.binary).input_specs
        inputs = read_inputs(args.input, specs)
    result = bench(args.binary, args.vs, args.model, inputs, args.threads, args.repeat, args.warmup, args.idle_wait,
                   log=(lambda msg: print(msg, file=sys.stderr)))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_result(result))
    return 0
