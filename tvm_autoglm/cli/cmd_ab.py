"""``auto-glm ab``: is build B faster than build A? Interleaved runs, a CI and a test, not two medians.

The verdict needs p < 0.05 (Mann-Whitney U), a bootstrap 95% CI of the
latency ratio that excludes 1, and at least a 1% effect; the outputs of A and
B are compared too, since a faster build that computes something else is not
an improvement.
"""

from __future__ import annotations

import json


def add_parser(subparsers):
    parser = subparsers.add_parser("ab", help="A/B latency of two builds with a bootstrap CI, a Mann-Whitney test and an output-parity check")
    parser.add_argument("--a", required=True, metavar="A.so", help="baseline build (.so or .glm)")
    parser.add_argument("--b", required=True, metavar="B.so", help="candidate build (.so or .glm)")
    parser.add_argument("--input", default=None, help="IN.npz keyed by input name (default: generated example inputs)")
    parser.add_argument("--repeat", type=int, default=30, help="clean timed runs per build (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per build first (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="TVM threads (default: physical cores)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--min-effect", type=float, default=0.01, help="smallest |ratio-1| reported as a difference (default 0.01)")
    parser.add_argument("--idle-wait", type=float, default=30.0, metavar="S", help="wait at most S seconds for the machine to go idle (default 30)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def parity(out_a: dict, out_b: dict) -> dict:
    """Max abs and rel difference per output (rel against |A| with a 1e-12 floor)."""
    import numpy as np

    from ..errors import InputError

    if list(out_a) != list(out_b):
        raise InputError(f"A and B have different outputs: {list(out_a)} vs {list(out_b)}")
    result = {}
    for name in out_a:
        a, b = np.asarray(out_a[name]), np.asarray(out_b[name])
        if a.shape != b.shape:
            result[name] = {"shape_a": list(a.shape), "shape_b": list(b.shape), "max_abs": None, "max_rel": None}
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        result[name] = {
            "max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float((diff / np.maximum(np.abs(a64), 1e-12)).max()) if diff.size else 0.0,
        }
    return result


def ab(a: str, b: str, inputs: dict | None = None, repeat: int = 30, warmup: int = 3, threads: int | None = None,
       alpha: float = 0.05, min_effect: float = 0.01, idle_wait: float = 30.0, seed: int = 0) -> dict:
    from ..errors import InputError
    from ..measure.candidates import tvm_candidate
    from ..measure.machine import machine_info, use_threads
    from ..measure.stats import compare
    from ..measure.timing import drop_note, measure_interleaved, wait_for_idle
    from ..native_log import quiet_native_stderr
    from ..runtime import Session, example_inputs

    threads = use_threads(threads)
    if repeat < 5:
        raise InputError(f"--repeat must be at least 5 for a test to mean anything (got {repeat})")
    if inputs is None:
        with quiet_native_stderr():
            opened = Session.open(a)
        inputs = example_inputs(opened.input_specs, index_ranges=opened.index_ranges)
        del opened  # the candidates load their own copies; do not hold a third during timing
    pa = tvm_candidate(a, inputs, name="A")
    pb = tvm_candidate(b, inputs, name="B")
    idle = wait_for_idle(max_wait_s=idle_wait)
    ta, tb = measure_interleaved([pa.candidate, pb.candidate], repeat=repeat, warmup=warmup)
    cmp = compare(ta.clean_s, tb.clean_s, alpha=alpha, min_effect=min_effect, seed=seed)
    return {
        "a": {"path": str(a), "detail": pa.detail, **ta.summary()},
        "b": {"path": str(b), "detail": pb.detail, **tb.summary()},
        "comparison": cmp.to_json(),
        "parity": parity(pa.outputs(), pb.outputs()),
        "machine": machine_info(threads),
        "idle": idle.text(),
        "dropped": drop_note([ta, tb]),
    }


def format_result(r: dict) -> str:
    from ..measure.machine import machine_line

    c = r["comparison"]
    lines = [
        f"A {r['a']['path']}: median {r['a']['median_ms']:.3f} ms (p90 {r['a']['p90_ms']:.3f}, {r['a']['runs']} runs) [{r['a']['detail']}]",
        f"B {r['b']['path']}: median {r['b']['median_ms']:.3f} ms (p90 {r['b']['p90_ms']:.3f}, {r['b']['runs']} runs) [{r['b']['detail']}]",
        f"latency ratio B/A {c['ratio']:.3f}, 95% bootstrap CI [{c['ci_low']:.3f}, {c['ci_high']:.3f}], Mann-Whitney U p = {c['p_value']:.3g}",
    ]
    verdict = {"faster": "B is faster than A", "slower": "B is slower than A"}.get(c["verdict"], "no significant difference")
    lines.append(f"verdict: {verdict} ({c['reason']})")
    for name, d in r["parity"].items():
        if d.get("max_abs") is None:
            lines.append(f"parity {name}: shapes differ {d['shape_a']} vs {d['shape_b']}")
        else:
            lines.append(f"parity {name}: max abs diff {d['max_abs']:.3g}, max rel diff {d['max_rel']:.3g}")
    lines.append(machine_line(r["machine"]))
    lines.append(r["idle"])
    lines.append(r["dropped"])
    return "\n".join(lines)


def run(args) -> int:
    inputs = None
    if args.input:
        from ..native_log import quiet_native_stderr
        from ..runtime import Session, read_inputs

        with quiet_native_stderr():
            inputs = read_inputs(args.input, Session.open(args.a).input_specs)
    result = ab(args.a, args.b, inputs, args.repeat, args.warmup, args.threads, args.alpha, args.min_effect, args.idle_wait)
    print(json.dumps(result, indent=2, default=str) if args.json else format_result(result))
    return 0
