"""``auto-glm``: the command-line entry point.

Sub-commands are discovered from ``cmd_*.py`` modules in this package, each
exposing ``add_parser(subparsers)`` and ``run(args) -> int``, so a feature adds
its command without touching this file. Errors the user can fix print one line
and exit 2; compiler bugs (``InternalError``, or any exception that escaped a
stage) print one line and exit 3, with the traceback only when ``AUTOGLM_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback

PROG = "auto-glm"


def _command_modules():
    from .. import cli

    for info in sorted(pkgutil.iter_modules(cli.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            yield importlib.import_module(f"{cli.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="Open-AutoGLM: compile ONNX models ahead of time with Apache TVM.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.run)
    return parser


# Commands that may need torch (building zoo models, --vs torch). For all others we keep torch
# out: tvm_ffi imports torch eagerly when it is installed, which costs seconds per CLI call.
_TORCH_COMMANDS = {"zoo", "bench"}


def _skip_torch_import(argv: list[str]) -> None:
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in _TORCH_COMMANDS or os.environ.get("AUTOGLM_ALLOW_TORCH") == "1":
        return
    if "torch" not in sys.modules and "tvm" not in sys.modules:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tvm_ffi handles


def main(argv: list[str] | None = None) -> int:
    from ..errors import AutoGLMError, as_internal

    _skip_torch_import(sys.argv[1:] if argv is None else argv)

    os.environ.setdefault("TVM_LOG_DEBUG", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except AutoGLMError as err:
        if os.environ.get("AUTOGLM_DEBUG") == "1":
            traceback.print_exc()
        print(f"{PROG}: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # never a raw traceback from deep inside TVM
        if os.environ.get("AUTOGLM_DEBUG") == "1":
            traceback.print_exc()
        internal = as_internal(f"'{args.command}'", err)
        print(f"{PROG}: error: {internal.one_line()}", file=sys.stderr)
        return internal.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
