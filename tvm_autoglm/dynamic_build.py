"""The pipeline's hooks for dynamic builds (symbolic input dims, see ``shape_ranges``).

Kept out of ``pipeline.py`` so the compile flow reads the same for both kinds of build:

* the frontend gets a shape for static inputs only; a symbolic input keeps the named
  ``dim_param`` the ONNX clean-up wrote, which the frontend imports as one ``tirx.Var`` per name
  (shared by every input with that name);
* ``main`` carries the ranges as ``tir_var_upper_bound`` / ``tir_var_lower_bound``, which Relax's
  memory planning reads to give every intermediate a static-size allocation (no allocation per
  call beyond the VM's pool);
* output shapes may be symbolic, but only in the input symbols: an output dim computed from
  data (NonZero, a data-dependent Range) would have no range the manifest could state.
"""

from __future__ import annotations

import contextlib

import tvm
from tvm import relax

from .errors import CompileError, InternalError
from .ir_utils import copy_module


def frontend_shape_dict(shapes: dict[str, list]) -> dict[str, list[int]]:
    """The frontend's ``shape_dict``: static inputs only (a symbolic input keeps its named dims)."""
    return {name: dims for name, dims in shapes.items() if not any(isinstance(d, str) for d in dims)}


@contextlib.contextmanager
def dynamic_import_errors(source: str, ranges: dict[str, tuple[int, int]]):
    """A dynamic import TVM's frontend cannot do (e.g. ``shape_of`` on a shape value in a torchscript
    export's shape arithmetic) is a limit of dynamic builds, not a compiler bug: one line, exit 2."""
    if not ranges:
        yield
        return
    try:
        yield
    except InternalError as err:
        raise CompileError(
            f"{source}: the graph does not import with symbolic dims {sorted(ranges)} ({err.detail.splitlines()[0][:200] if err.detail else err.stage}); "
            "pin those dims with --input-shape, or export the model with the dynamo exporter"
        ) from None


def annotate_bounds(mod: tvm.IRModule, ranges: dict[str, tuple[int, int]]) -> tvm.IRModule:
    """Put the symbols' ranges on ``main`` (memory planning and our schedule rules read them)."""
    if not ranges:
        return mod
    func = mod["main"]
    func = func.with_attr("tir_var_upper_bound", {name: int(hi) for name, (_, hi) in ranges.items()})
    func = func.with_attr("tir_var_lower_bound", {name: int(lo) for name, (lo, _) in ranges.items()})
    out = copy_module(mod)
    out["main"] = func
    return out


def check_symbols(mod: tvm.IRModule, ranges: dict[str, tuple[int, int]]) -> None:
    """Every symbolic dim of ``main``'s parameters must be one of ours (the import made them from the names)."""
    for param in mod["main"].params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None or not hasattr(ty.shape, "values"):
            continue
        for dim in ty.shape.values:
            for var in _free_vars(dim):
                if var.name not in ranges:
                    raise InternalError("ONNX import", f"input '{param.name}' has symbolic dim '{var.name}', which has no range")


def _free_vars(expr) -> list:
    if isinstance(expr, (int, tvm.tirx.IntImm)):
        return []
    from tvm.tirx.analysis import undefined_vars

    return list(undefined_vars(expr))


def output_shape(name: str, leaf, ranges: dict[str, tuple[int, int]]) -> list:
    """An output's manifest shape: ints, and symbolic dims as their expression text (``seq``, ``seq * 2``)."""
    shape = []
    for dim in leaf.shape.values:
        if isinstance(dim, tvm.tirx.IntImm):
            shape.append(int(dim))
            continue
        unknown = sorted({v.name for v in _free_vars(dim)} - set(ranges))
        if unknown:
            raise CompileError(f"output '{name}' has a dim computed from data ({dim}: {', '.join(unknown)}), not from the input dims; dynamic builds need output shapes that follow from the inputs")
        shape.append(_expression_text(dim))
    return shape


def _expression_text(dim) -> str:
    """``height // T.int64(2)`` -> ``height // 2``: the manifest's text for a symbolic output dim."""
    import re

    return re.sub(r"T\.int64\((-?\d+)\)", r"\1", str(dim))
