"""Makes ``import tvm.s_tir.tensor_intrin`` take seconds instead of minutes.

MetaSchedule's builder (and its CPU schedule rules) import that module, which
parses hundreds of TVMScript intrinsics; each parse calls ``inspect.stack()``,
and every frame lookup there scans all of ``sys.modules`` for ``<ast>`` frames.
On a loaded 2-core machine the import measured 4m20s, longer than the
builder's per-candidate timeout, so every build timed out and its worker was
restarted to do it all again: no trial ever finished. The parser only needs the
frame objects, so a stack without source context is equivalent and fast.
"""

from __future__ import annotations

import contextlib
import inspect
import sys


def _stack_without_source(context: int = 1):
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None))
        frame = frame.f_back
    return frames


@contextlib.contextmanager
def cheap_inspect_stack():
    original = inspect.stack
    inspect.stack = _stack_without_source
    try:
        yield
    finally:
        inspect.stack = original


def preload_tensor_intrin() -> None:
    """Imports tvm.s_tir.tensor_intrin once, fast; also the builder workers' initializer."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with cheap_inspect_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401
