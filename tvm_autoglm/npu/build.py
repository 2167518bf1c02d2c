"""Compiling the simulator with the system C compiler, once per source version.

Two builds of the same file: an object with hidden internals that
``export_library(addons=[...])`` links into every exported model (each model
then owns its counters, and a second loaded model cannot interpose its
``npu_exec``), and a shared library loaded ``RTLD_GLOBAL`` so models run
in-process straight from ``tvm.compile`` resolve ``npu_exec`` through the JIT.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from ..errors import CompileError

SOURCE = Path(__file__).resolve().parent / "csrc" / "npu_sim.c"
CFLAGS = ["-O2", "-fPIC", "-std=c11", "-Wall"]


def cache_dir() -> Path:
    root = os.environ.get("AUTOGLM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tvm_autoglm")
    return Path(root) / "npu"


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise CompileError("npu-sim needs a C compiler (cc/gcc/clang) to build its simulator; none found on PATH")


def _digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]


def _build(kind: str) -> Path:
    out = cache_dir() / _digest() / ("npu_sim.o" if kind == "object" else "libnpu_sim.so")
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        if kind == "object":
            cmd = [_compiler(), *CFLAGS, "-DNPU_HIDDEN", "-fvisibility=hidden", "-c", str(SOURCE), "-o", str(tmp_out)]
        else:
            cmd = [_compiler(), *CFLAGS, "-shared", str(SOURCE), "-o", str(tmp_out), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"building the npu-sim simulator failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        os.replace(tmp_out, out)
    return out


def object_file() -> Path:
    """The simulator object to link into an exported model."""
    return _build("object")


def shared_library() -> Path:
    return _build("shared")


@lru_cache(maxsize=1)
def global_library() -> ctypes.CDLL:
    """The simulator loaded with RTLD_GLOBAL, so JIT-compiled models find ``npu_exec``."""
    return ctypes.CDLL(str(shared_library()), mode=ctypes.RTLD_GLOBAL)


def export_options() -> dict:
    """What ``export_library`` needs to link the simulator into the model library."""
    return {"addons": [str(object_file())], "options": ["-lm"]}
