"""Calling the simulator directly (tests, the tile search, tools)."""

from __future__ import annotations

import ctypes

import numpy as np

from . import build


def _lib():
    lib = build.global_library()
    lib.npu_time_program.restype = ctypes.c_int64
    lib.npu_time_program.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.npu_exec_exported.restype = ctypes.c_int32
    lib.npu_exec_exported.argtypes = [ctypes.c_void_p, ctypes.c_int32] + [ctypes.c_void_p] * 4
    return lib


def time_program(program) -> int:
    """Cycles of a program, without data (counters untouched)."""
    words = np.ascontiguousarray(program.array() if hasattr(program, "array") else program, dtype=np.int32)
    cycles = _lib().npu_time_program(words.ctypes.data, words.shape[0])
    if cycles < 0:
        raise RuntimeError(f"npu-sim rejected the program (code {cycles})")
    return int(cycles)


def execute(program, *arrays: np.ndarray) -> None:
    """Run a program on numpy arrays (DRAM slots 0..3, in order); counters advance."""
    words = np.ascontiguousarray(program.array() if hasattr(program, "array") else program, dtype=np.int32)
    ptrs = [a.ctypes.data if a is not None else None for a in arrays] + [None] * (4 - len(arrays))
    rc = _lib().npu_exec_exported(words.ctypes.data, words.shape[0], *ptrs)
    if rc != 0:
        raise RuntimeError(f"npu-sim program failed (code {rc})")
