"""Contraction analysis shared by the Matmul and Conv rules (and the Pool rule's pad test).

Why its own module: the Matmul rule hands conv-shaped contractions to ``conv.py``, and
``conv.py`` classifies them with the same access analysis; with the analysis inside
``matmul.py`` the two rule modules imported each other. Nothing here schedules: it
only reads a block's buffer accesses and says which axis is which.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.ir.expr import Call, TensorLoad
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr


@dataclass
class Contraction:
    """Axes of a contraction block, by position in the normalized iter list."""

    vec: int  # iter indexing the output's last (contiguous) dimension
    row: int | None  # iter to register-block across (broadcast side)
    spatial: list[int]  # all spatial iters in block order
    reduce: list[int]  # all reduction iters in block order
    dtype: str
    pack_operand: int | None = None  # read-buffer index of the vector-side operand, if packable
    panel: int | None = None  # width W of a vector-side operand pre-packed as w[n // W, .., n % W] (passes/pack_dense_weights.py)
    vec_load: TensorLoad | None = None  # the operand read along ``vec`` (a weight), casts stripped
    other_load: TensorLoad | None = None  # the other operand (the broadcast side: activations, a conv's input)


def is_load(expr) -> bool:
    return isinstance(expr, TensorLoad)


def strip_cast(expr):
    """Look through casts and the ``if_then_else`` an inlined pad leaves behind."""
    while True:
        if isinstance(expr, tirx.Cast):
            expr = expr.value
        elif isinstance(expr, Call) and str(getattr(expr.op, "name", "")).endswith("if_then_else"):
            expr = expr.args[1]
        else:
            return expr


def vars_in(indices) -> set:
    found: set = set()
    for idx in indices:
        found |= collect_vars_used_in_prim_expr(idx)
    return found


def analyze_contraction(block, iter_vars: list) -> Contraction | None:
    """Recognise ``out[..] = out[..] + a[..] * b[..]`` and classify its axes."""
    body = block.body
    if not isinstance(body, tirx.BufferStore):
        return None
    value = body.value
    if not isinstance(value, tirx.Add):
        return None
    lhs, rhs = value.a, value.b
    if not (is_load(lhs) and lhs.source.same_as(body.buffer)):
        lhs, rhs = rhs, lhs
    if not (is_load(lhs) and lhs.source.same_as(body.buffer)):
        return None
    rhs = strip_cast(rhs)
    if not isinstance(rhs, tirx.Mul):
        return None
    a, b = strip_cast(rhs.a), strip_cast(rhs.b)
    if not (is_load(a) and is_load(b)):
        return None
    if not str(body.buffer.dtype).startswith(("float", "int")):  # int32 accumulators: the int8 quantized matmuls
        return None

    a_vars, b_vars = vars_in(a.indices), vars_in(b.indices)
    kinds = ["R" if iv.iter_type == tirx.IterVar.CommReduce else "S" for iv in block.iter_vars]
    if "R" not in kinds or any(iv.iter_type not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for iv in block.iter_vars):
        return None
    spatial = [i for i, k in enumerate(kinds) if k == "S"]
    reduce = [i for i, k in enumerate(kinds) if k == "R"]
    # Every reduction axis must feed both operands (a true contraction, not a
    # pooling-like sum of a product with a broadcast).
    for i in reduce:
        var = block.iter_vars[i].var
        if var not in a_vars and var not in b_vars:
            return None

    if not spatial or not body.indices:
        return None  # a full contraction to a scalar (einsum "i,i"): no output axis to tile or vectorize
    last = body.indices[-1]
    vec = None
    for i in spatial:
        if last.same_as(block.iter_vars[i].var):
            vec = i
    if vec is None:
        return None
    vec_var = block.iter_vars[vec].var
    vec_side = a_vars if vec_var in a_vars else b_vars
    other_side = b_vars if vec_side is a_vars else a_vars

    def _extent(i):
        dom = block.iter_vars[i].dom.extent
        return int(dom.value) if isinstance(dom, tirx.IntImm) else 0

    candidates = [i for i in spatial if i != vec and _extent(i) > 1]
    # Prefer an axis only the broadcast side reads: its value is one scalar per
    # register row, so the vector-side loads are shared by all rows.
    broadcast = [i for i in candidates if block.iter_vars[i].var in other_side and block.iter_vars[i].var not in vec_side]
    if not broadcast and candidates:
        # No axis is private to the other operand (depthwise conv, elementwise
        # product-sum): no load is shared across rows, so register blocking
        # does not pay; leave it to the Pool rule.
        return None
    row = max(broadcast, key=_extent) if broadcast else None
    vec_load = a if vec_var in a_vars else b
    pack = None
    if all(isinstance(i, tirx.Var) for i in vec_load.indices) and vec_load.indices[-1].same_as(vec_var):
        for pos, region in enumerate(block.reads):
            if region.source.same_as(vec_load.source):
                pack = pos
    panel = None
    last_index = vec_load.indices[-1]
    if isinstance(last_index, tirx.FloorMod) and last_index.a.same_as(vec_var) and isinstance(last_index.b, tirx.IntImm):
        panel = int(last_index.b.value)
    return Contraction(
        vec=vec, row=row, spatial=spatial, reduce=reduce, dtype=str(body.buffer.dtype), pack_operand=pack, panel=panel,
        vec_load=vec_load, other_load=b if vec_load is a else a,
    )


def is_pad(block) -> bool:
    body = block.body
    if not isinstance(body, tirx.BufferStore):
        return False
    value = body.value
    return isinstance(value, Call) and str(getattr(value.op, "name", "")).endswith("if_then_else")
