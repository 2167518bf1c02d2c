"""Pre-pack constant fp32 matmul weights into column panels at compile time.

The CPU Matmul rule (``schedule_rules/matmul.py``) computes an ``mr x width``
register tile and walks the whole reduction for it, so each step loads
``width = nv * lanes`` consecutive floats of the weight row ``W[k, :]``. Rows
are ``N`` floats apart (3 KiB to 12 KiB in bert-base: a power-of-two-ish stride
that aliases in L1/L2), so without help the rule copies that ``K x width``
panel into a contiguous buffer inside the kernel, once per column tile, on
every call.

The weights are constants, so this pass does that copy once, at compile time:
``W[K, N]`` is stored as ``Wp[N / width, K, width]`` and the matmul becomes an
equivalent TE compute reading ``Wp[n // width, k, n % width]``. ``width`` is
the column width of the tile the Matmul rule will choose for that kernel
(:func:`..schedule_rules.matmul.choose_tile` with the target's lanes and
register count, rows = the largest leading extent of ``x``), so one column
tile reads exactly one contiguous panel; the rule recognises the packed read,
skips its in-kernel copy and keeps its tile to widths dividing the panel.

One-row matmuls (``x`` of a single row: an LLM's decode step, taken by the Gemv
rule) whose ``N`` is not a whole number of vectors (GPT-2's 50257-token LM head)
are packed too, zero-padded to whole panels of :data:`ONE_ROW_PANEL_VECTORS`
vectors: the kernel computes the padded columns and a last stage keeps the first
``N``, so the weights still stream as contiguous whole-vector panels instead of
one scalar column at a time (extra bytes: under one panel, ``K x W`` floats).

Where: ``relax.matmul(x, W)`` with a 2-D float32 constant ``W`` and float32
``x`` whose last dim is static (leading dims may be symbolic: a dynamic build's
rows, tiled as ``symbolic_rows.NOMINAL_ROWS`` like the rule does), in graph-level functions; and the same matmul inside an
``autoglm.epilogue_layout`` composite (``fuse_epilogue``: matmul + bias +
head-split reshape/permute), where ``W`` arrives as a parameter bound to a
constant at the call site -- the composite is specialised to take the packed
constant. Anything else (activation x activation, batched 3-D weights, widths
that do not divide ``N``) is left as it was. Quantization (``--quantize``)
looks for plain ``R.matmul`` sites, so every quantize mode turns this pass
off (``quantize.passes_off_for``, used by the API and the CLI alike).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, te
from tvm.ir.expr import Constant

from ..ir_utils import static_shape
from ._util import mutate_graph_functions
from .registry import register_pass
from .tally import current

COMPOSITES = ("autoglm.epilogue_layout",)


def _target_params() -> tuple[int, int]:
    """(fp32 lanes, vector registers) of the current target; AVX2 (8, 16) without one."""
    from ..schedule_rules import _common as C

    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return 8, 16
    return C.vector_lanes(target, "float32"), C.num_vector_registers(target)


#: A symbolic dim in the shapes :func:`_row_shape` returns.
SYMBOLIC = -1


def _static_shape(expr) -> tuple[int, ...] | None:
    """The static shape of a float32 tensor, else None: the packed kernels are float32 only."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32":
        return None
    return static_shape(expr)


def _row_shape(expr) -> tuple[int, ...] | None:
    """A float32 activation's shape with symbolic leading dims as ``SYMBOLIC``; None when its rank
    is unknown or its last (contraction) dim is not a number."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32" or ty.shape is None or not hasattr(ty.shape, "values"):
        return None
    dims = [int(d) if isinstance(d, (int, tvm.tirx.IntImm)) else SYMBOLIC for d in ty.shape.values]
    if not dims or dims[-1] == SYMBOLIC:
        return None
    return tuple(dims)


#: Panel width, in vectors, of a zero-padded one-row weight (the Gemv rule's widest column tile).
ONE_ROW_PANEL_VECTORS = 4


def padded_one_row_width(x_shape: tuple[int, ...], n: int, lanes: int) -> int | None:
    """Panel width for a one-row ``x`` whose ``n`` no vector tile divides (pad to whole panels), else None."""
    if any(d != 1 for d in x_shape[:-1]) or n < lanes or lanes < 4:
        return None
    return ONE_ROW_PANEL_VECTORS * lanes


def panel_width(x_shape: tuple[int, ...], n: int, lanes: int, nregs: int, segment: int | None = None) -> int | None:
    """Columns of the Matmul rule's register tile for ``x[..., K] @ W[K, n]``, or None (no vector tile).

    ``segment``: the head width of a fused reshape-to-heads epilogue. The rule
    only fuses such an epilogue into a tile inside one head
    (``C.epilogue_covers_tile``), so it takes the best tile whose width divides it.
    """
    from ..schedule_rules.matmul import tile_candidates
    from ..schedule_rules.symbolic_rows import NOMINAL_ROWS

    # The rule's row axis: the longest static one, else a symbolic one (tiled as NOMINAL_ROWS).
    rows = [d for d in x_shape[:-1] if d > 1]
    if not rows and SYMBOLIC in x_shape[:-1]:
        rows = [NOMINAL_ROWS]
    for _, nv, lane in tile_candidates(max(rows) if rows else 1, n, lanes, nregs):
        width = nv * lane
        if lane >= 4 and n % width == 0 and (segment is None or segment % width == 0):
            return width
    return None


def packed_weight(weight: np.ndarray, width: int) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[ceil(N / width), K, width]`` with ``Wp[j, k, i] = W[k, j * width + i]`` (zeros past N)."""
    k, n = weight.shape
    padded = -(-n // width) * width
    if padded != n:
        weight = np.concatenate([weight, np.zeros((k, padded - n), weight.dtype)], axis=1)
    return np.ascontiguousarray(weight.reshape(k, padded // width, width).transpose(1, 0, 2))


def symbolic_pad_rows(x_shape: tuple[int, ...] | None, n: int, width: int, lanes: int, nregs: int) -> int:
    """Rows the packed kernel pads its symbolic row axis to a multiple of (1: no padding).

    Only when the rule would tile a symbolic row axis (no static row > 1): the ``mr`` of the
    rule's best tile of this ``width`` at ``symbolic_rows.NOMINAL_ROWS`` rows. The padded rows
    let the rule split them by ``mr`` exactly (``schedule_rules/symbolic_rows.py``); TVM's
    ``pad_einsum`` cannot do that inside the kernel because the packed index is not an iterator.
    """
    from ..schedule_rules.matmul import tile_candidates
    from ..schedule_rules.symbolic_rows import NOMINAL_ROWS

    if x_shape is None or SYMBOLIC not in x_shape[:-1] or any(d > 1 for d in x_shape[:-1]):
        return 1
    for mr, nv, lane in tile_candidates(NOMINAL_ROWS, n, lanes, nregs):
        if nv * lane == width:
            return mr
    return 1


def matmul_packed_te(x: te.Tensor, wp: te.Tensor, pad_rows: int = 1, n: int | None = None) -> te.Tensor:
    """``x[..., K] @ W[K, N]`` reading the panel-packed ``wp[ceil(N / width), K, width]``.

    ``pad_rows > 1``: the innermost symbolic leading axis (rows) is computed over
    ``ceildiv(rows, pad_rows) * pad_rows`` rows from a zero-padded copy of ``x``, and only
    the real rows are copied out (the copy is inlined into the fused epilogue).
    With ``n`` short of the padded width (a one-row weight padded to whole panels), the
    product is computed over whole panels and a second stage keeps the first ``n`` columns
    (``matmul_cols``).
    """
    blocks, k_extent, width = (int(d) for d in wp.shape)
    k = te.reduce_axis((0, k_extent), name="k")
    lead = list(x.shape[:-1])  # symbolic rows stay symbolic
    symbolic = [i for i, d in enumerate(lead) if not isinstance(d, (int, tvm.tirx.IntImm))]
    if pad_rows <= 1 or not symbolic:
        full = te.compute(
            (*lead, blocks * width),
            lambda *i: te.sum(x[(*i[:-1], k)] * wp[i[-1] // width, k, i[-1] % width], axis=k),
            name="matmul",
        )
        if n is None or n == blocks * width:
            return full
        return te.compute((*lead, n), lambda *i: full(*i), name="matmul_cols")
    axis = symbolic[-1]
    rows = lead[axis]
    padded = list(lead)
    padded[axis] = tvm.tirx.floordiv(rows + (pad_rows - 1), pad_rows) * pad_rows
    zero = tvm.tirx.const(0, x.dtype)
    x_pad = te.compute(
        (*padded, k_extent),
        lambda *i: tvm.tirx.if_then_else(i[axis] < rows, x[i], zero),
        name="x_pad",
    )
    acc = te.compute(
        (*padded, blocks * width),
        lambda *i: te.sum(x_pad[(*i[:-1], k)] * wp[i[-1] // width, k, i[-1] % width], axis=k),
        name="matmul_pad",
    )
    return te.compute((*lead, blocks * width), lambda *i: acc[i], name="matmul")


def _packed_call(builder: relax.BlockBuilder, x, wp, pad_rows: int = 1, n: int | None = None) -> relax.Call:
    """``call_tir`` of the packed matmul kernel (added to the module once per shape)."""
    options = {}
    if pad_rows > 1:
        options["pad_rows"] = pad_rows
    if n is not None:
        options["n"] = n
    return builder.call_te(matmul_packed_te, x, wp, primfunc_name_hint="matmul_packed", **options)


def _pad_rows(x, wp, lanes: int, nregs: int) -> int:
    blocks, _, width = (int(d) for d in wp.ty.shape.values) if hasattr(wp.ty.shape, "values") else (0, 0, 0)
    return symbolic_pad_rows(_row_shape(x), blocks * width, width, lanes, nregs) if width else 1


def _is_matmul(call) -> bool:
    return isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.matmul"


def _fp32_out(call) -> bool:
    out_dtype = call.attrs.out_dtype
    return out_dtype is None or str(out_dtype) in ("", "void", "float32")


@relax.expr_functor.mutator
class _InnerPacker(relax.PyExprMutator):
    """Inside one composite: ``matmul(x, param)`` -> the packed kernel reading ``new_param``."""

    def __init__(self, mod, builder, param, new_param, lanes, nregs):
        super().__init__(mod)
        self.outer = builder
        self.param, self.new_param = param, new_param
        self.lanes, self.nregs = lanes, nregs

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if _is_matmul(call) and call.args[1].same_as(self.param):
            pad = _pad_rows(call.args[0], self.new_param, self.lanes, self.nregs)
            return _packed_call(self.outer, call.args[0], self.new_param, pad)
        return call


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod, lanes: int, nregs: int):
        super().__init__(mod)
        self.source = mod
        self.lanes, self.nregs = lanes, nregs
        self.packed = 0
        self.constants: dict = {}  # (weight Constant, width) -> packed Constant: a shared weight is packed once
        self.specialised: dict = {}  # (composite gv, arg index, width) -> specialised gv
        self.replaced: set = set()

    def _width(self, x_shape, weight, segment=None) -> int | None:
        if x_shape is None or len(x_shape) < 2 or weight is None or x_shape[-1] != weight.shape[0]:
            return None
        return panel_width(x_shape, int(weight.shape[1]), self.lanes, self.nregs, segment)

    def _packed_const(self, const: Constant, width: int) -> Constant:
        key = (const, width)
        if key not in self.constants:
            self.constants[key] = relax.const(packed_weight(const.value.numpy(), width), "float32")
        return self.constants[key]

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if _is_matmul(call):
            return self._rewrite_matmul(call)
        if isinstance(call, relax.Call) and isinstance(call.op, relax.GlobalVar):
            return self._rewrite_composite_call(call)
        return call

    def _rewrite_matmul(self, call):
        weight = _weight(call.args[1])
        if weight is None or not _fp32_out(call):
            return call
        x_shape = _row_shape(call.args[0])
        width = self._width(x_shape, weight)
        if width is None and x_shape is not None and len(x_shape) >= 2 and x_shape[-1] == weight.shape[0]:
            width = padded_one_row_width(x_shape, int(weight.shape[1]), self.lanes)
        if width is None:
            return call
        wp = self._packed_const(call.args[1], width)
        self.packed += 1
        return _packed_call(self.builder_, call.args[0], wp, _pad_rows(call.args[0], wp, self.lanes, self.nregs), int(weight.shape[1]))

    def _rewrite_composite_call(self, call):
        gv = call.op
        try:
            func = self.source[gv]
        except Exception:  # pylint: disable=broad-except  (not a function of this module)
            return call
        if not isinstance(func, relax.Function) or func.attrs is None:
            return call
        if "Primitive" not in func.attrs or str(func.attrs.get("Composite", "")) not in COMPOSITES:
            return call
        args = list(call.args)
        for i, (arg, param) in enumerate(zip(args, func.params)):
            weight = _weight(arg)
            if weight is None:
                continue
            uses = _uses(func, param)
            if not uses or not all(_is_matmul(u) and u.args[1].same_as(param) and not u.args[0].same_as(param) and _fp32_out(u) for u in uses):
                continue
            shapes = {_row_shape(u.args[0]) for u in uses}
            segment = _head_width(func, int(weight.shape[1]))
            widths = {self._width(s, weight, segment) for s in shapes}
            if len(widths) != 1 or None in widths:
                continue
            width = widths.pop()
            key = (gv, i, width)
            if key not in self.specialised:
                new_param = relax.Var(param.name, relax.TensorType([weight.shape[1] // width, weight.shape[0], width], "float32"))
                inner = _InnerPacker(self.source, self.builder_, param, new_param, self.lanes, self.nregs)
                body = inner.visit_expr(func.body)
                params = [new_param if j == i else p for j, p in enumerate(func.params)]
                new_func = relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs)
                self.specialised[key] = self.builder_.add_func(new_func, f"{gv.name_hint}_packed")
            self.replaced.add(gv)
            args[i] = self._packed_const(arg, width)
            self.packed += len(uses)
            return relax.Call(self.specialised[key], args, call.attrs, call.ty_args)
        return call


def _weight(expr) -> np.ndarray | None:
    """The 2-D float32 constant value of a matmul's right operand, else None."""
    if not isinstance(expr, Constant):
        return None
    value = expr.value
    if len(value.shape) != 2 or str(value.dtype) != "float32":
        return None
    return value.numpy()


def _head_width(func: relax.Function, n: int) -> int | None:
    """The inner width of a reshape in ``func`` that splits a last axis of ``n`` (heads), else None."""
    widths = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.reshape":
                src, dst = _row_shape(value.args[0]), _row_shape(value)
                if src and dst and src[-1] == n and 0 < dst[-1] != n:
                    widths.append(dst[-1])
    return math.gcd(*widths) if widths else None


def _uses(func: relax.Function, var: relax.Var) -> list:
    """The bound values in ``func`` that mention ``var``; a None stands for a use outside a binding."""
    found: list = []
    for block in func.body.blocks:
        for binding in block.bindings:
            if any(v.same_as(var) for v in relax.analysis.free_vars(binding.value)):
                found.append(binding.value)
    if any(v.same_as(var) for v in relax.analysis.free_vars(func.body.body)):
        found.append(None)
    return found


@tvm.transform.module_pass(opt_level=0, name="AutoGLMPackDenseWeights")
def pack_dense_weights_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    lanes, nregs = _target_params()
    packer = _Packer(mod, lanes, nregs)
    out = mutate_graph_functions(mod, packer)
    current().rewrote(packer.packed)
    if not packer.replaced:
        return out
    # A composite specialised at every call site is dead now; FuseOps would still lower it.
    used = _called(out)
    for gv in packer.replaced:
        if gv not in used:
            out = tvm.IRModule({g: f for g, f in out.functions.items() if not g.same_as(gv)}, attrs=out.attrs)
    return out


def _called(mod: tvm.IRModule) -> set:
    seen: set = set()

    def visit(expr):
        if isinstance(expr, relax.GlobalVar):
            seen.add(expr)

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return seen


@register_pass("pack_dense_weights")
def pack_dense_weights():
    """matmul with a constant fp32 [K, N] weight -> weight pre-packed as [N/width, K, width] panels (O3, CPU)."""
    return pack_dense_weights_pass
