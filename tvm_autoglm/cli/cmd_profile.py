"""``auto-glm profile``: where the time goes, kernel by kernel, against the machine's measured peak."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_binary_flag


def add_parser(subparsers):
    parser = subparsers.add_parser("profile", help="time per kernel of a compiled .so/.glm (table, HTML report, PNG chart)")
    add_binary_flag(parser)
    parser.add_argument("--input", default=None, help="IN.npz keyed by input name (default: generated example inputs)")
    parser.add_argument("--repeat", type=int, default=10, help="profiled runs (median per kernel; default 10)")
    parser.add_argument("--threads", type=int, default=None, help="TVM threads (default: physical cores)")
    parser.add_argument("--html", default=None, metavar="REPORT.html", help="write a self-contained HTML report")
    parser.add_argument("--png", default=None, metavar="CHART.png", help="write a bar chart PNG (matplotlib)")
    parser.add_argument("--no-peak", action="store_true", help="skip measuring the machine's fp32 peak")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    return parser


def run(args) -> int:
    from ..errors import InputError
    from ..measure.machine import machine_info, machine_line, peak_gflops, use_threads
    from ..measure.profile import format_table, profile_session
    from ..native_log import quiet_native_stderr
    from ..runtime import Session, example_inputs, read_inputs
    from ..runtime.manifest import write_bytes_atomic

    threads = use_threads(args.threads)
    if args.repeat < 1:
        raise InputError(f"--repeat must be >= 1 (got {args.repeat})")
    with quiet_native_stderr():
        session = Session.open(args.binary)
    inputs = read_inputs(args.input, session.input_specs) if args.input else example_inputs(session.input_specs, index_ranges=session.index_ranges)
    peak = None
    if not args.no_peak and session.manifest.get("target", {}).get("device", "cpu") == "cpu":  # the FMA kernel measures the CPU only
        peak = peak_gflops(threads)
    profile = profile_session(session, inputs, repeat=args.repeat, peak=peak)
    profile.binary = str(args.binary)
    info = machine_info(threads)
    profile.machine = info
    if args.html:
        from ..measure.report_html import profile_html

        write_bytes_atomic(Path(args.html), profile_html(profile, machine_line(info)).encode())
    if args.png:
        from ..measure.report_html import bar_png

        rows = profile.rows
        bar_png(args.png, [r.name for r in rows], [r.ms for r in rows], "ms per inference", f"time per kernel: {Path(args.binary).name}")
    if args.json:
        print(json.dumps(profile.to_json(), indent=2, default=str))
    else:
        print(format_table(profile))
        print(machine_line(info))
        for path in (args.html, args.png):
            if path:
                print(f"wrote {path}")
    return 0
