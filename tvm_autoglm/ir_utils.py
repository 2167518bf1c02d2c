"""Small read-only questions about TVM IR that every layer asks: the bottom of the import graph.

Why a module of its own: the pipeline, the scheduler, the GPU and NPU back ends,
tuning, quantization and the passes each kept their own copy of these helpers
(three ``is_scheduled`` that disagreed on the attribute key, seven module copies),
and importing the "owner" of a helper pulled in the owner's dependencies, which
closed import cycles. This module imports only TVM and the standard library, so
anything in the package may import it.
"""

from __future__ import annotations

from collections import Counter

import tvm
from tvm import relax

#: Attribute names marking a PrimFunc as already scheduled. dlight and MetaSchedule write
#: ``tirx.is_scheduled`` in TVM 0.27; ``tir.is_scheduled`` is the pre-rename spelling that
#: older records and our own NPU kernels still carry.
SCHEDULED_ATTRS = ("tirx.is_scheduled", "tir.is_scheduled")


def copy_module(mod: tvm.IRModule) -> tvm.IRModule:
    """A shallow copy of ``mod`` (same functions, same attrs).

    dlight's ``ApplyDefaultSchedule`` and ``IRModule.__setitem__`` mutate the module
    they are given; callers copy first so that the caller's module is left intact.
    """
    return tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)


def is_scheduled(func) -> bool:
    """Whether a PrimFunc is marked scheduled (by a tuning record, a default rule, or at birth)."""
    attrs = getattr(func, "attrs", None)
    if attrs is None:
        return False
    return any(key in attrs and int(attrs[key]) == 1 for key in SCHEDULED_ATTRS)


def static_shape(expr) -> tuple[int, ...] | None:
    """The shape of a tensor-typed Relax expression if every dimension is a known integer, else None.

    None covers a non-tensor type, an unknown rank and any symbolic dimension: callers decline
    (leave the IR unchanged) rather than guess.
    """
    ty = expr.ty if isinstance(expr, relax.Expr) else expr  # an expression or its type
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def kernel_names(mod: tvm.IRModule) -> list[str]:
    """Names of the TIR kernels in a module, sorted."""
    return sorted(gv.name_hint for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc))


def op_histogram(mod: tvm.IRModule) -> dict:
    """Counts of Relax ops and ``call_tir`` kernels called from the module's Relax functions."""
    counts: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call):
            if isinstance(expr.op, tvm.ir.Op):
                if expr.op.name in ("relax.call_tir", "relax.call_tir_inplace") and isinstance(expr.args[0], relax.GlobalVar):
                    counts["call_tir"] += 1
                else:
                    counts[expr.op.name.removeprefix("relax.")] += 1
            elif isinstance(expr.op, relax.GlobalVar):
                counts[f"@{expr.op.name_hint}"] += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return dict(sorted(counts.items()))
