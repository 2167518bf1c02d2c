"""``auto-glm ab``: is build B faster than build A? Interleaved runs, a CI and a test, not two medians.

The verdict needs p < 0.05 (Mann-Whitney U), a bootstrap 95% CI of the
latency ratio that excludes 1, and at least a 1% effect; the outputs of A and
B are compared too, since a faster build that computes something else is not
an improvement.

``--per-kernel`` answers where instead of whether: interleaved per-kernel profiles
of A and B (``measure.kernel_ab``), one row per kernel of either build, with a
PNG / HTML report like ``auto-glm profile``.
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
    parser.add_argument("--per-kernel", action="store_true", help="per-kernel A/B table instead: interleaved profiles, median ms per kernel of either build")
    parser.add_argument("--rounds", type=int, default=4, help="--per-kernel: interleaved profile rounds (default 4)")
    parser.add_argument("--top", type=int, default=24, help="--per-kernel: rows shown in the table, slowest first (0: all; default 24)")
    parser.add_argument("--html", default=None, metavar="REPORT.html", help="--per-kernel: write a self-contained HTML report")
    parser.add_argument("--png", default=None, metavar="CHART.png", help="--per-kernel: write an A/B bar chart PNG (matplotlib)")
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


def per_kernel(a: str, b: str, inputs: dict | None = None, rounds: int = 4, threads: int | None = None, warmup: int = 1):
    """Interleaved per-kernel profiles of A and B on the same inputs (a ``measure.kernel_ab.KernelAB``), with output parity."""
    from ..errors import InputError
    from ..measure.kernel_ab import kernel_ab
    from ..measure.machine import machine_info, use_threads
    from ..native_log import quiet_native_stderr
    from ..runtime import Session, example_inputs

    threads = use_threads(threads)
    if rounds < 1:
        raise InputError(f"--rounds must be at least 1 (got {rounds})")
    with quiet_native_stderr():
        session_a, session_b = Session.open(a), Session.open(b)
    if inputs is None:
        inputs = example_inputs(session_a.input_specs, index_ranges=session_a.index_ranges)
    result = kernel_ab(session_a, session_b, inputs, rounds, warmup=max(0, warmup), a_label=str(a), b_label=str(b))
    result.parity = parity(session_a.run(inputs), session_b.run(inputs))
    result.machine = machine_info(threads)
    return result


def _run_per_kernel(args, inputs) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..measure.kernel_ab import format_table
    from ..measure.machine import machine_line
    from ..runtime.manifest import write_bytes_atomic

    if args.top < 0:
        raise InputError(f"--top must be >= 0 (got {args.top})")
    result = per_kernel(args.a, args.b, inputs, args.rounds, args.threads, args.warmup)
    if args.html:
        from ..measure.report_html import kernel_ab_html

        write_bytes_atomic(Path(args.html), kernel_ab_html(result, machine_line(result.machine)).encode())
    if args.png:
        from ..measure.report_html import paired_bar_png

        shown = result.pairs[: args.top] if args.top else result.pairs
        paired_bar_png(args.png, [p.name for p in shown], [p.a_ms for p in shown], [p.b_ms for p in shown], "ms per inference",
                       f"per kernel: A {Path(args.a).name} vs B {Path(args.b).name}")
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
        return 0
    print(format_table(result, args.top or None))
    for name, d in result.parity.items():
        if d.get("max_abs") is None:
            print(f"parity {name}: shapes differ {d['shape_a']} vs {d['shape_b']}")
        else:
            print(f"parity {name}: max abs diff {d['max_abs']:.3g}, max rel diff {d['max_rel']:.3g}")
    print(machine_line(result.machine))
    for path in (args.html, args.png):
        if path:
            print(f"wrote {path}")
    return 0


def run(args) -> int:
    inputs = None
    if args.input:
        from ..native_log import quiet_native_stderr
        from ..runtime import Session, read_inputs

        with quiet_native_stderr():
            inputs = read_inputs(args.input, Session.open(args.a).input_specs)
    if args.per_kernel:
        return _run_per_kernel(args, inputs)
    result = ab(args.a, args.b, inputs, args.repeat, args.warmup, args.threads, args.alpha, args.min_effect, args.idle_wait)
    print(json.dumps(result, indent=2, default=str) if args.json else format_result(result))
    return 0
