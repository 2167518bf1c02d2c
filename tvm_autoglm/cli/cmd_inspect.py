"""``auto-glm inspect``: what a model is made of, and what our passes do to it."""

from __future__ import annotations

import json

from .common import add_freeze_flag, add_model_flags, parse_dynamic, parse_frozen, parse_shapes
from .explain import add_explain_flag, check_names, explain_lines


def add_parser(subparsers):
    parser = subparsers.add_parser("inspect", help="inputs, outputs, op histogram and support of an ONNX model; per-pass effects with --optimize-level")
    add_model_flags(parser)
    add_freeze_flag(parser)
    parser.add_argument("--optimize-level", type=int, default=None, choices=[0, 1, 2, 3], help="also run the passes of this level and show what each did")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--disable-pass", action="append", default=[], metavar="NAME")
    parser.add_argument("--quantize", default="none", choices=["none", "fp16", "bf16", "int8", "auto"],
                        help="also show each layer's precision (and, for auto, its measured sensitivity); implies --optimize-level 3 unless given")
    parser.add_argument("--accuracy-budget", type=float, default=None, help="with --quantize auto")
    parser.add_argument("--calibration", default=None, help="with --quantize: calibration inputs (.npz)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_explain_flag(parser)
    return parser


def describe(args) -> dict:
    from .. import onnx_model
    from ..frontend.checks import refusals

    explain = list(getattr(args, "explain_pass", []) or [])
    check_names(explain)
    if explain and args.optimize_level is None:
        args.optimize_level = 3  # explaining a pass means running the passes
    proto, path = onnx_model.load_model(args.model)
    frozen_values = parse_frozen(args)
    if frozen_values:
        from ..freeze import freeze_inputs

        proto, frozen = freeze_inputs(proto, frozen_values)
    supported = onnx_model.supported_ops()
    histogram = onnx_model.op_histogram(proto)
    unsupported = onnx_model.unsupported_nodes(proto)
    info = {
        "model": str(path),
        "opset": {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import},
        "inputs": [s.to_json() for s in onnx_model.graph_inputs(proto)],
        "outputs": [s.to_json() for s in onnx_model.graph_outputs(proto)],
        "nodes": len(proto.graph.node),
        "initializers": len(proto.graph.initializer),
        "ops": [{"op": op, "count": n, "supported": op in supported} for op, n in sorted(histogram.items())],
        "unsupported": [{"op": op, "node": node} for op, node in unsupported],
        "refused": refusals(proto, folded=False),  # nodes whose attributes/inputs a converter does not handle
    }
    if frozen_values:
        info["frozen_inputs"] = frozen
    quantize = getattr(args, "quantize", "none") or "none"
    if quantize != "none" and args.optimize_level is None:
        args.optimize_level = 3
    if args.optimize_level is not None:
        from ..pipeline import compile_model

        build = compile_model(args.model, args.target, args.optimize_level, parse_shapes(args), disabled_passes=tuple(args.disable_pass),
                              quantize=quantize, accuracy_budget=getattr(args, "accuracy_budget", None),
                              calibration=getattr(args, "calibration", None),
                              freeze_inputs=parse_frozen(args), until="relax", **parse_dynamic(args)).build
        if getattr(build, "quantization", None):
            info["quantization"] = build.quantization
        info["optimize_level"] = args.optimize_level
        info["passes"] = [r.to_json() for r in build.pass_reports]
        info["kernels"] = build.kernels
        if build.notes:
            info["notes"] = list(build.notes)
    return info


def run(args) -> int:
    info = describe(args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model: {info['model']}  (opset {info['opset']}, {info['nodes']} nodes, {info['initializers']} initializers)")
    for title, key in (("inputs", "inputs"), ("outputs", "outputs")):
        print(f"{title}:")
        for spec in info[key]:
            print(f"  {spec['name']}: {spec['dtype']}[{', '.join(map(str, spec['shape']))}]")
    for spec in info.get("frozen_inputs", []):
        print(f"  {spec['name']}: frozen to {spec['dtype']} {spec['value']}")
    print("ops:")
    for row in info["ops"]:
        mark = "" if row["supported"] else "   <- UNSUPPORTED"
        print(f"  {row['op']:<28}{row['count']:>6}{mark}")
    if info["unsupported"]:
        print(f"unsupported nodes: {', '.join(u['op'] + ' (' + u['node'] + ')' for u in info['unsupported'])}")
    else:
        print("all ops supported")
    for reason in info["refused"]:
        print(f"refused: {reason}")
    if "passes" in info:
        print(f"passes at O{info['optimize_level']}:")
        for report in info["passes"]:
            before, after = sum(report["ops_before"].values()), sum(report["ops_after"].values())
            changed = {k: (report["ops_before"].get(k, 0), report["ops_after"].get(k, 0)) for k in set(report["ops_before"]) | set(report["ops_after"])}
            delta = ", ".join(f"{k} {a}->{b}" for k, (a, b) in sorted(changed.items()) if a != b)
            print(f"  {report['name']:<28}{report['seconds'] * 1000:>9.1f} ms  {_rewrites_cell(report):>9}  calls {before}->{after}  {delta}")
        print(f"kernels ({len(info['kernels'])}):")
        for name in info["kernels"]:
            print(f"  {name}")
        if info.get("quantization"):
            _print_quantization(info["quantization"])
        if info.get("notes"):
            print("notes:")
            for line in info["notes"]:
                print(f"  {line}")
        for name in getattr(args, "explain_pass", []) or []:
            for line in explain_lines(name, info["passes"]):
                print(line)
    return 0


def _rewrites_cell(report: dict) -> str:
    """``N rw`` from the pass's own count, ``~N rw`` from the op histogram, ``-`` when neither."""
    count = report.get("rewrites")
    if count is None:
        return "-"
    return f"{'~' if report.get('rewrites_estimated') else ''}{count} rw"


def _print_quantization(quant: dict) -> None:
    counts = quant.get("counts", {})
    shown = ("int8", "fp16", "bf16", "fp32") if counts.get("bf16") or "bf16" in (quant.get("ladder") or ()) else ("int8", "fp16", "fp32")
    print(f"quantization ({quant.get('mode')}): " + ", ".join(f"{p} {counts.get(p, 0)}" for p in shown))
    if "end_to_end_error" in quant:
        print(f"  budget {quant['budget']} ({quant.get('error_definition', '')}); ladder {' < '.join(quant.get('ladder', []))}")
        print(f"  measured end-to-end error {quant['end_to_end_error']:.3g} on {quant.get('calibration_samples')} samples ({quant.get('calibration')})")
    with_bf16 = "bf16" in shown
    print(f"  {'layer':<12}{'weight':>14}  {'precision':<10}{'err int8':>10}{'err fp16':>10}" + (f"{'err bf16':>10}" if with_bf16 else ""))
    for row in quant.get("layers", []):
        def fmt(v):
            return "-" if v is None else f"{v:.2e}"
        shape = "x".join(map(str, row["weight_shape"]))
        print(f"  {row['layer']:<12}{shape:>14}  {row['precision']:<10}{fmt(row.get('error_int8')):>10}{fmt(row.get('error_fp16')):>10}"
              + (f"{fmt(row.get('error_bf16')):>10}" if with_bf16 else ""))
