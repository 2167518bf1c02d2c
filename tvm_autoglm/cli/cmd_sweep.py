"""``auto-glm sweep``: latency and throughput over batch x sequence; the best configuration under a latency SLO."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers):
    parser = subparsers.add_parser("sweep", help="compile+measure each batch x seq shape; best throughput under a p90 latency SLO")
    parser.add_argument("--model", required=True, help="ONNX model file")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--seq", default=None, help="comma-separated sequence lengths for 2-D [batch, seq] inputs")
    parser.add_argument("--slo-ms", type=float, default=None, help="p90 latency objective in ms (default: none)")
    parser.add_argument("--target", default="cpu", help="target name (default cpu; measuring needs the device)")
    parser.add_argument("--optimize-level", type=int, default=3, choices=[0, 1, 2, 3], help="opt level (default 3)")
    parser.add_argument("--tuning-db", default=None, metavar="DIR", help="MetaSchedule database folder to apply")
    parser.add_argument("--repeat", type=int, default=15, help="clean timed runs per shape (default 15)")
    parser.add_argument("--threads", type=int, default=None, help="TVM threads (default: physical cores)")
    parser.add_argument("--html", default=None, metavar="REPORT.html", help="write a self-contained HTML report")
    parser.add_argument("--png", default=None, metavar="CHART.png", help="write a throughput chart PNG (matplotlib)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--dynamic", action="store_true", help="compile once with batch/seq ranges and run every shape on that build")
    return parser


def run(args) -> int:
    from ..measure.machine import machine_info, machine_line, use_threads
    from ..measure.sweep import format_table, parse_int_list, run_sweep
    from ..runtime.manifest import write_bytes_atomic

    threads = use_threads(args.threads)
    batches = parse_int_list(args.batch, "--batch")
    seqs = parse_int_list(args.seq, "--seq") if args.seq else None
    if args.slo_ms is not None and args.slo_ms <= 0:
        from ..errors import InputError

        raise InputError(f"--slo-ms must be positive (got {args.slo_ms})")

    def progress(point):
        state = f"failed: {point.error}" if point.error else f"median {point.median_ms:.3f} ms, p90 {point.p90_ms:.3f} ms"
        print(f"[sweep] {point.label}: {state}", file=sys.stderr)

    result = run_sweep(args.model, batches, seqs, args.slo_ms, args.target, args.optimize_level, args.repeat, args.tuning_db, on_point=progress,
                       dynamic=args.dynamic)
    line = machine_line(machine_info(threads))
    if args.html:
        from ..measure.report_html import sweep_html

        write_bytes_atomic(Path(args.html), sweep_html(result, line).encode())
    if args.png:
        from ..measure.report_html import bar_png

        ok = [p for p in result.points if p.throughput is not None]
        best = ok.index(result.best) if result.best in ok else None
        bar_png(args.png, [p.label for p in ok], [p.throughput for p in ok], "samples/s (green: best under the SLO)", f"sweep: {Path(args.model).name}", highlight=best)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(format_table(result))
        print(line)
    return 0
