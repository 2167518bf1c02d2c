"""Open-AutoGLM: compile ONNX models ahead of time with Apache TVM.

The compiler entry points are imported lazily so that ``tvm_autoglm.runtime``
(deployment) never loads onnx or the passes.
"""

__version__ = "0.1.0"

_LAZY = {
    "compile": ("tvm_autoglm.api", "compile"),
    "load": ("tvm_autoglm.api", "load"),
    "CompiledModel": ("tvm_autoglm.api", "CompiledModel"),
    "tune": ("tvm_autoglm.tuning", "tune"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tvm_autoglm' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
