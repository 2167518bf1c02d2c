"""``auto-glm compile``: ONNX -> ``.so`` + manifest (or one ``.glm``)."""

from __future__ import annotations

import sys

from .common import add_freeze_flag, add_build_flags, add_model_flags, parse_dynamic, parse_frozen, parse_shapes
from .explain import add_explain_flag, check_names, explain_lines


def add_parser(subparsers):
    parser = subparsers.add_parser("compile", help="compile an ONNX model to a deployable .so (+ .json manifest) or .glm")
    add_model_flags(parser)
    add_freeze_flag(parser)
    add_build_flags(parser)
    parser.add_argument("--output", required=True, help="OUT.so (manifest OUT.json beside it) or OUT.glm")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS", help="print the Relax IR after a pass (repeatable)")
    parser.add_argument("--quantize", default="none", choices=["none", "fp16", "bf16", "int8", "auto", "wint8"], help="precision (default none: fp32; wint8: weight-only int8)")
    parser.add_argument("--accuracy-budget", type=float, default=None, help="with --quantize auto / wint8: allowed end-to-end error (wint8: 1 - worst output-row cosine, default 0.01)")
    parser.add_argument("--calibration", default=None, help="with --quantize: calibration inputs (.npz)")
    parser.add_argument("--weights", default="embedded", choices=["embedded", "external"],
                        help="embedded (default): weights compiled into the .so; external: written once to OUT.weights "
                             "beside it and memory-mapped at load (CPU targets, .so output)")
    parser.add_argument("--quiet", action="store_true", help="no stage progress on stderr")
    add_explain_flag(parser)
    from .cmd_generate import add_generator_flags

    add_generator_flags(parser)
    return parser


def run(args) -> int:
    from ..artifact import export
    from ..native_log import quiet_native_stderr
    from ..pipeline import compile_model
    from ..progress import StageLog

    check_names(args.explain_pass)
    if args.weights == "external":
        from ..artifact import check_external_output

        check_external_output(args.output)
    log = StageLog("compile", enabled=not args.quiet)
    if args.generate:
        from .cmd_generate import compile_generator

        return compile_generator(args, log)
    done = compile_model(
        args.model,
        args.target,
        args.optimize_level,
        parse_shapes(args),
        args.tuning_db,
        disabled_passes=tuple(args.disable_pass),
        print_ir_after=tuple(args.print_ir_after),
        use_shipped_schedules=not args.no_shipped_schedules,
        quantize=args.quantize,
        accuracy_budget=args.accuracy_budget,
        calibration=args.calibration,
        freeze_inputs=parse_frozen(args),
        weights=args.weights,
        log=log,
        **parse_dynamic(args),
    )
    build, manifest = done.build, done.manifest
    with log.stage("export"), quiet_native_stderr():
        path = export(done.executable, manifest, args.output, weights=done.scheduled.weights)
    for name in args.explain_pass:
        for line in explain_lines(name, build.pass_reports):
            print(line)
    tuning = manifest["tuning"]
    print(
        f"wrote {path} (target {build.target.name}, O{build.opt_level}, {len(manifest['kernels'])} kernels: "
        f"{tuning['tuned_kernels']} tuned, {tuning['default_scheduled_kernels']} default-scheduled, {tuning['plain_kernels']} plain)",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    if (build.quantization or {}).get("mode") == "wint8":
        from ..quantize.wint8_build import layer_lines

        print("\n".join(layer_lines(build.quantization)), file=sys.stderr if args.quiet else sys.stdout)
    return 0
