"""Flags shared by several sub-commands, defined once so they read the same everywhere."""

from __future__ import annotations


def add_model_flags(parser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="ONNX model file")
    parser.add_argument(
        "--input-shape",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME:DIMS",
        help="static shape for an input, e.g. input_ids:1x128 (repeatable)",
    )


def add_build_flags(parser) -> None:
    parser.add_argument("--target", default="cpu", help="target name from targets/*.json (default: cpu, this machine)")
    parser.add_argument("--optimize-level", type=int, default=3, choices=[0, 1, 2, 3], help="0: none, 1: fold+fuse, 2: +rewrites, 3: +QKV merge/layout (default 3)")
    parser.add_argument("--disable-pass", action="append", default=[], metavar="NAME", help="skip a named pass (repeatable)")
    parser.add_argument("--tuning-db", default=None, metavar="DIR", help="MetaSchedule database folder to apply")
    parser.add_argument("--no-shipped-schedules", action="store_true", help="do not apply the schedules shipped in schedules/")


def parse_shapes(args) -> dict:
    from ..onnx_model import parse_input_shapes

    return parse_input_shapes(args.input_shape)
