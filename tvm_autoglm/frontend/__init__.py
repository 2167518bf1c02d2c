"""Our additions to TVM's ONNX frontend: converters for ops it lacks or gets wrong.

TVM 0.27's ``from_onnx`` looks every node up in ``onnx_frontend._get_convert_map()``.
Each module in this package defines converters (``OnnxOpConverter`` subclasses, the
frontend's own shape) and registers them with :func:`register`; :func:`extended_convert_map`
swaps the frontend's map for the base map plus ours for the duration of one import,
so nothing outside an import sees the change and TVM's converters stay untouched.

A converter here is ours to keep correct: each one is tested against onnxruntime.
A converter that handles only part of its op registers a support check in :mod:`.checks`
(``register_check``), which refuses the rest before import, one line per node.
"""

from __future__ import annotations

import contextlib
import importlib
import threading

#: op_type -> converter class. Filled by the modules in ``_CONVERTER_MODULES``.
_EXTRA: dict[str, type] = {}
#: Modules whose import registers converters (one module per op family).
_CONVERTER_MODULES: tuple[str, ...] = ("attention", "constant", "normalization", "resize", "rnn", "symbolic_range")
_lock = threading.RLock()
_loaded = False


def register(*op_types: str):
    """Class decorator: make the class the converter of ``op_types`` (replacing TVM's if it has one)."""

    def wrap(cls):
        for op_type in op_types:
            _EXTRA[op_type] = cls
        return cls

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        for name in _CONVERTER_MODULES:
            importlib.import_module(f"{__name__}.{name}")
        _loaded = True


def extra_converters() -> dict[str, type]:
    """Our converters by op type."""
    _load()
    return dict(_EXTRA)


def convert_map() -> dict:
    """TVM's converter map with ours on top: what an import under :func:`extended_convert_map` uses."""
    import tvm.relax.frontend.onnx.onnx_frontend as frontend

    base = _ORIGINAL.get("fn", frontend._get_convert_map)()
    base.update(extra_converters())
    return base


_ORIGINAL: dict = {}


@contextlib.contextmanager
def extended_convert_map():
    """Within the block, TVM's ONNX frontend converts with :func:`convert_map`."""
    import tvm.relax.frontend.onnx.onnx_frontend as frontend

    with _lock:
        original = frontend._get_convert_map
        _ORIGINAL.setdefault("fn", original)
        frontend._get_convert_map = convert_map
        try:
            yield
        finally:
            frontend._get_convert_map = original
