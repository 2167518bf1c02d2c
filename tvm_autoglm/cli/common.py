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
        help="shape for an input, e.g. input_ids:1x128; a dim MIN..MAX stays symbolic (input_ids:1x1..512) (repeatable)",
    )
    parser.add_argument(
        "--dynamic-dim",
        action="append",
        default=[],
        metavar="NAME=MIN..MAX",
        help="keep the ONNX dim NAME symbolic over MIN..MAX in every input that has it, e.g. seq=1..512 (repeatable)",
    )
    parser.add_argument(
        "--specialize",
        action="append",
        default=[],
        metavar="NAME=SIZE,...",
        help="also build static variants for these sizes of a symbolic dim, called when the input matches exactly, e.g. seq=128,256",
    )


def add_freeze_flag(parser) -> None:
    parser.add_argument(
        "--freeze-input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind an input to a constant before import, e.g. sr=16000 or axes=0,2 (repeatable); Ifs and shape arithmetic on it fold away",
    )


def add_binary_flag(parser, help: str = "OUT.so (manifest beside it) or OUT.glm") -> None:
    parser.add_argument("--binary", required=True, help=help)


def add_target_flags(parser, opt_level_help: str = "0: none, 1: fold+fuse, 2: +rewrites, 3: +QKV merge/layout (default 3)") -> None:
    parser.add_argument("--target", default="cpu", help="target name from targets/*.json (default: cpu, this machine)")
    parser.add_argument("--optimize-level", type=int, default=3, choices=[0, 1, 2, 3], help=opt_level_help)


def add_schedule_flags(
    parser,
    tuning_db_help: str = "MetaSchedule database folder to apply",
    shipped_help: str = "do not apply the schedules shipped in schedules/",
) -> None:
    """--tuning-db and --no-shipped-schedules; tune reads them as where to write and what to seed from."""
    parser.add_argument("--tuning-db", default=None, metavar="DIR", help=tuning_db_help)
    parser.add_argument("--no-shipped-schedules", action="store_true", help=shipped_help)


def add_build_flags(parser) -> None:
    add_target_flags(parser)
    parser.add_argument("--disable-pass", action="append", default=[], metavar="NAME", help="skip a named pass (repeatable)")
    add_schedule_flags(parser)


def parse_shapes(args) -> dict:
    """``--input-shape`` items as ``{input: [dims]}`` (a dim may be a ``(min, max)`` range)."""
    from ..shape_ranges import parse_input_shapes

    return parse_input_shapes(args.input_shape)


def parse_dynamic(args) -> dict:
    """``--dynamic-dim`` and ``--specialize`` as ``compile_model`` keyword arguments (None when not given)."""
    from ..shape_ranges import parse_dynamic_dims
    from ..specialize import parse_specialize

    return {
        "dynamic_dims": parse_dynamic_dims(getattr(args, "dynamic_dim", None)) or None,
        "specialize": parse_specialize(getattr(args, "specialize", None)) or None,
    }


def parse_frozen(args) -> dict:
    from ..freeze import parse_freeze_items

    return parse_freeze_items(getattr(args, "freeze_input", None))
