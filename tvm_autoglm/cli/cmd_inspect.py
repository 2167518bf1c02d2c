"""``auto-glm inspect``: what a model is made of, and what our passes do to it."""

from __future__ import annotations

import json

from .common import add_model_flags, parse_shapes


def add_parser(subparsers):
    parser = subparsers.add_parser("inspect", help="inputs, outputs, op histogram and support of an ONNX model; per-pass effects with --optimize-level")
    add_model_flags(parser)
    parser.add_argument("--optimize-level", type=int, default=None, choices=[0, 1, 2, 3], help="also run the passes of this level and show what each did")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--disable-pass", action="append", default=[], metavar="NAME")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def describe(args) -> dict:
    from .. import onnx_model

    proto, path = onnx_model.load_model(args.model)
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
    }
    if args.optimize_level is not None:
        from ..pipeline import build_relax

        build = build_relax(args.model, args.target, args.optimize_level, parse_shapes(args), tuple(args.disable_pass))
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
    print("ops:")
    for row in info["ops"]:
        mark = "" if row["supported"] else "   <- UNSUPPORTED"
        print(f"  {row['op']:<28}{row['count']:>6}{mark}")
    if info["unsupported"]:
        print(f"unsupported nodes: {', '.join(u['op'] + ' (' + u['node'] + ')' for u in info['unsupported'])}")
    else:
        print("all ops supported")
    if "passes" in info:
        print(f"passes at O{info['optimize_level']}:")
        for report in info["passes"]:
            before, after = sum(report["ops_before"].values()), sum(report["ops_after"].values())
            changed = {k: (report["ops_before"].get(k, 0), report["ops_after"].get(k, 0)) for k in set(report["ops_before"]) | set(report["ops_after"])}
            delta = ", ".join(f"{k} {a}->{b}" for k, (a, b) in sorted(changed.items()) if a != b)
            print(f"  {report['name']:<28}{report['seconds'] * 1000:>9.1f} ms  calls {before}->{after}  {delta}")
        print(f"kernels ({len(info['kernels'])}):")
        for name in info["kernels"]:
            print(f"  {name}")
        if info.get("notes"):
            print("notes:")
            for line in info["notes"]:
                print(f"  {line}")
    return 0
