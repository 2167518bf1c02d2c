"""``auto-glm execute``: run an artifact on inputs from ``.npz`` or ``.bin``."""

from __future__ import annotations

from pathlib import Path

from .common import add_binary_flag


def add_parser(subparsers):
    parser = subparsers.add_parser("execute", help="run a compiled .so/.glm on inputs")
    add_binary_flag(parser)
    parser.add_argument("--input", default=None, help="IN.npz keyed by input name, or IN.bin (raw little-endian, manifest order); default: generated example inputs")
    parser.add_argument("--output", default=None, help="RESULT.npz keyed by output name")
    parser.add_argument("--repeat", type=int, default=0, help="time N runs and print median/min/max latency")
    parser.add_argument("--report", default=None, help="npu-sim only: write the simulator report (JSON; .html beside it)")
    return parser


def run(args) -> int:
    import numpy as np

    from ..native_log import quiet_native_stderr
    from ..runtime import Session, example_inputs, read_inputs, summarize
    from ..runtime.manifest import write_bytes_atomic

    with quiet_native_stderr():
        session = Session.open(args.binary)
    if args.input:
        inputs = read_inputs(args.input, session.input_specs)
    else:
        inputs = example_inputs(session.input_specs, index_ranges=session.index_ranges, symbolic_dims=session.manifest.get("symbolic_dims"))
        print("no --input given: using generated example inputs")
    outputs = session.run(inputs)
    for name, value in outputs.items():
        flat = value.reshape(-1)
        preview = ", ".join(f"{v:.6g}" for v in flat[:4]) if flat.size else ""
        print(f"{name}: {value.dtype}[{'x'.join(map(str, value.shape))}] [{preview}{', ...' if flat.size > 4 else ''}]")
    if args.output:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        write_bytes_atomic(Path(args.output), buffer.getvalue())
        print(f"wrote {args.output}")
    if args.repeat and args.repeat > 0:
        stats = summarize(session.latencies(inputs, repeat=args.repeat))
        print(f"latency over {stats['runs']} runs: median {stats['median_ms']:.3f} ms, min {stats['min_ms']:.3f} ms, max {stats['max_ms']:.3f} ms")
    if args.report:
        from ..npu.report import write_report

        write_report(session, inputs, args.report)
    return 0
