"""Decode attention over the valid cache prefix, reading K and V in place (generator ``main``).

A generator's decode function (``generate/kv_rewrite.py``) writes each new key/value row into a
preallocated cache of ``max_context`` slots, then the imported graph attends over *all* slots
(unused ones masked) and feeds ``Q @ K^T`` a ``permute_dims`` of the whole key cache (and, for
grouped-query attention, an ``expand_dims -> broadcast_to -> reshape`` copy of both caches).
Every decode step therefore copied each layer's cache and paid ``max_context``-slot attention
from the first token.

This pass finds each fused attention group (``fuse_attention``) whose keys and values trace back
to in-place cache writes through exactly those layout ops, reads what the group computes
(scalings, additive masks, softmax, NaN guard, head merge), and replaces it with one call of the
decode kernel (``_decode_attention_kernel``), which loops over slots ``0..cache_position`` of the
caches themselves. The transposes and GQA copies are left dead (``dead_code_elimination``).

Semantics: slot ``j <= cache_position`` gets the model's own mask values exactly; slots after
``cache_position`` do not take part, as in onnxruntime's cache loop where a past of
``cache_position`` tokens has no further slots. (The full-slot graph relied on the caller's
``attention_mask`` being 0 there; the generator's runner always sets it so.)

Declines (IR unchanged, reason in ``--explain-pass decode_attention``) whenever the group is not
that exact form: another op in the chain, masking by ``where``, a non-scalar scale, a query of
more than one row, shapes that do not line up with the cache, or keys/values not read from a
cache write. Functions without cache writes (every ordinary model, ``prefill``) have no candidate.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..ir_utils import static_shape
from ._decode_attention_kernel import DecodeAttention, decode_attention_kernel
from ._util import mutate_graph_functions, scalar_value
from .attention import COMPOSITE_NAME
from .registry import register_pass
from .tally import current

#: ``autoglm.kernel`` of the in-place cache write (``generate/kv_rewrite.write_kernel``).
CACHE_WRITE_KERNEL = "write_kv_cache"

_SCALES = {"relax.multiply": "mul", "relax.divide": "div"}
_LAYOUT = ("relax.reshape", "relax.permute_dims")


class Decline(Exception):
    """This group is not the decode attention form (message: why)."""


def _op(expr) -> str:
    return getattr(getattr(expr, "op", None), "name", "") if isinstance(expr, relax.Call) else ""


def _shape(expr) -> list[int]:
    shape = static_shape(expr)
    if shape is None:
        raise Decline("a symbolic or unknown shape")
    return list(shape)


class _Core:
    """What one composite attention group computes, in terms of the call site's arguments."""

    def __init__(self, func: relax.Function, args):
        self.arg = dict(zip(func.params, args))
        self.q = self.k = self.v = None
        self.q_scale, self.k_scale, self.score_scale = [], [], []
        self.biases: list = []
        self.nan_fill = None
        self.tails: list = []  # (op name, attrs / shape) of the head merge after P.V
        self._read(func)

    def _scalar(self, var) -> float | None:
        return scalar_value(self.arg.get(var, var))

    def _scaling(self, call):
        """(operand, (op, value)) for ``x * c`` / ``x / c`` / ``c * x`` with a one-element constant c, else None."""
        kind = _SCALES.get(_op(call))
        if kind is None:
            return None
        a, b = call.args
        if self._scalar(b) is not None:
            return a, (kind, self._scalar(b))
        if kind == "mul" and self._scalar(a) is not None:
            return b, (kind, self._scalar(a))
        return None

    def _read(self, func):
        bindings = [b for block in func.body.blocks for b in block.bindings]
        operand: dict = {}  # var -> (source param, scalings) before the scores matmul
        i = 0
        while i < len(bindings) and _op(bindings[i].value) != "relax.matmul":
            scaled = self._scaling(bindings[i].value)
            if scaled is None:
                raise Decline(f"{_op(bindings[i].value) or 'a non-call'} before the scores matmul")
            src, op = scaled
            base, ops = operand.get(src, (src, ()))
            if base not in self.arg:
                raise Decline("a scaled operand that is not a group input")
            operand[bindings[i].var] = (base, ops + (op,))
            i += 1
        if i == len(bindings):
            raise Decline("no scores matmul")
        q, k = bindings[i].value.args
        (self.q, q_ops), (self.k, k_ops) = operand.get(q, (q, ())), operand.get(k, (k, ()))
        if self.q not in self.arg or self.k not in self.arg:
            raise Decline("scores matmul operands are not group inputs")
        self.q_scale, self.k_scale = list(q_ops), list(k_ops)
        current, phase = bindings[i].var, "scores"
        isnan_var = None
        for binding in bindings[i + 1:]:
            value, op = binding.value, _op(binding.value)
            args = list(value.args) if isinstance(value, relax.Call) else []
            if phase == "scores" and op in _SCALES and not self.biases and self._scaling(value) and self._scaling(value)[0].same_as(current):
                self.score_scale.append(self._scaling(value)[1])
            elif phase == "scores" and op == "relax.add" and any(a.same_as(current) for a in args):
                other = args[1] if args[0].same_as(current) else args[0]
                if other not in self.arg:
                    raise Decline("a mask that is not a group input")
                self.biases.append(self.arg[other])
            elif phase == "scores" and op == "relax.nn.softmax" and args[0].same_as(current):
                axis = int(value.attrs.axis)
                if axis not in (-1, len(_shape(args[0])) - 1):
                    raise Decline(f"softmax over axis {axis}")
                phase = "probs"
            elif phase == "probs" and op == "relax.isnan" and args[0].same_as(current) and isnan_var is None:
                isnan_var = binding.var
                continue  # current stays the probabilities
            elif phase == "probs" and op == "relax.where" and isnan_var is not None and args[0].same_as(isnan_var) and args[2].same_as(current):
                self.nan_fill = self._scalar(args[1])
                if self.nan_fill is None:
                    raise Decline("a NaN guard whose fill is not a one-element constant")
                isnan_var = None
            elif phase == "probs" and op == "relax.matmul" and args[0].same_as(current) and isnan_var is None:
                if args[1] not in self.arg:
                    raise Decline("values that are not a group input")
                self.v, phase = args[1], "out"
            elif phase == "out" and op in _LAYOUT and args[0].same_as(current):
                self.tails.append((op, value))
            else:
                raise Decline(f"{op or 'a non-call'} where the decode form has {'scale/mask/softmax' if phase == 'scores' else 'NaN guard/P.V' if phase == 'probs' else 'the head merge'}")
            current = binding.var
        if phase != "out" or not func.body.body.same_as(current):
            raise Decline("the group does not end in P.V and its head merge")


class _Caches:
    """Where a group input comes from in the calling function: an in-place cache write, through layout ops."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        self.mod = mod
        self.bound = {b.var: b.value for block in func.body.blocks for b in block.bindings}

    def _value(self, expr):
        return self.bound.get(expr) if isinstance(expr, relax.Var) else None

    def write(self, expr):
        """(cache write var, position arg) when ``expr`` is bound to an in-place cache write, else None."""
        value = self._value(expr)
        if value is None or _op(value) != "relax.call_tir_inplace":
            return None
        callee = self.mod[value.args[0]] if isinstance(value.args[0], tvm.ir.GlobalVar) else None
        attrs = getattr(callee, "attrs", None)
        if attrs is None or attrs.get("autoglm.kernel") != CACHE_WRITE_KERNEL:
            return None
        return expr, value.args[1].fields[2]

    def trace(self, expr, transposed: bool):
        """(cache write var, position, kv heads repeat) behind a group's K^T (transposed) or V input."""
        if transposed:
            value = self._value(expr)
            if _op(value) != "relax.permute_dims" or value.attrs.axes is None or [int(a) for a in value.attrs.axes] != [0, 1, 3, 2]:
                raise Decline("keys are not permute_dims(cache, [0, 1, 3, 2])")
            expr = value.args[0]
        found = self.write(expr)
        if found is not None:
            return (*found, 1)
        # grouped-query attention: reshape(broadcast_to(expand_dims(cache, 2), [B, KV, rep, S, D]), [B, KV*rep, S, D])
        reshape = self._value(expr)
        bcast = self._value(reshape.args[0]) if _op(reshape) == "relax.reshape" else None
        expand = self._value(bcast.args[0]) if _op(bcast) == "relax.broadcast_to" else None
        if _op(expand) != "relax.expand_dims" or [int(a) for a in expand.attrs.axis] != [2]:
            raise Decline(f"{'keys' if transposed else 'values'} are not read from an in-place cache write")
        found = self.write(expand.args[0])
        if found is None:
            raise Decline(f"{'keys' if transposed else 'values'} are not read from an in-place cache write")
        b, kv, s, d = _shape(found[0])
        b5, kv5, rep, s5, d5 = _shape(bcast)
        if (b5, kv5, s5, d5) != (b, kv, s, d) or _shape(reshape) != [b, kv * rep, s, d]:
            raise Decline("the grouped-query repeat is not [B, KV, rep, S, D] -> [B, KV*rep, S, D]")
        return (*found, rep)


def _spec(core: _Core, caches: _Caches, lanes: int):
    """(DecodeAttention, kernel inputs) for a group, or Decline."""
    q_arg, k_arg, v_arg = core.arg[core.q], core.arg[core.k], core.arg[core.v]
    for name, expr in (("query", q_arg), ("keys", k_arg), ("values", v_arg)):
        if expr.ty.dtype != "float32":
            raise Decline(f"{name} are {expr.ty.dtype}, the decode kernel is float32")
    b, heads, rows, head_dim = _shape(q_arg)
    if b != 1 or rows != 1:
        raise Decline(f"query is {[b, heads, rows, head_dim]}, expected one row of batch 1")
    k_write, k_pos, k_rep = caches.trace(k_arg, transposed=True)
    v_write, v_pos, v_rep = caches.trace(v_arg, transposed=False)
    if not k_pos.same_as(v_pos):
        raise Decline("keys and values are written at different positions")
    _, kv_heads, slots, kd = _shape(k_write)
    if _shape(v_write) != [1, kv_heads, slots, kd] or kd != head_dim or k_rep != v_rep or kv_heads * k_rep != heads:
        raise Decline(f"caches {_shape(k_write)} / {_shape(v_write)} do not match {heads} query heads of dim {head_dim}")
    if _shape(k_arg) != [1, heads, head_dim, slots] or _shape(v_arg) != [1, heads, slots, head_dim]:
        raise Decline("keys/values of the group are not the whole caches")
    bias_heads = []
    for bias in core.biases:
        shape = _shape(bias)
        if bias.ty.dtype != "float32" or len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, heads) or shape[2] != 1 or shape[3] != slots:
            raise Decline(f"mask {bias.ty.dtype}{shape} is not float32[1, 1|{heads}, 1, {slots}]")
        bias_heads.append(shape[1])
    spec = DecodeAttention(heads=heads, kv_heads=kv_heads, slots=slots, head_dim=head_dim, q_scale=tuple(core.q_scale),
                           k_scale=tuple(core.k_scale), score_scale=tuple(core.score_scale), bias_heads=tuple(bias_heads),
                           nan_fill=core.nan_fill, lanes=lanes)
    return spec, [q_arg, k_write, v_write, *core.biases, k_pos]


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int):
        super().__init__(mod)
        self.mod = mod
        self.lanes = lanes
        self.kernels: dict = {}
        self.caches = None
        self.rewrites = 0
        self.declines: list[str] = []

    def visit_function_(self, func):
        self.caches = _Caches(self.mod, func)
        return super().visit_function_(func)

    def visit_var_binding_(self, binding):
        self.binding_var = binding.var
        super().visit_var_binding_(binding)

    def visit_call_(self, call):
        callee = self.mod[call.op] if isinstance(call.op, tvm.ir.GlobalVar) else None
        attrs = getattr(callee, "attrs", None)
        if not isinstance(callee, relax.Function) or attrs is None or attrs.get("Composite") != COMPOSITE_NAME:
            return super().visit_call_(call)
        name = getattr(self, "binding_var", None)
        try:
            core = _Core(callee, list(call.args))
            spec, inputs = _spec(core, self.caches, self.lanes)
        except Decline as why:
            if self._reads_a_cache(call):
                self.declines.append(f"attention {name.name if name is not None else call.op.name_hint}: {why}")
            return super().visit_call_(call)
        if spec not in self.kernels:
            self.kernels[spec] = self.builder_.add_func(decode_attention_kernel(spec), "decode_attention")
        out = relax.call_tir(self.kernels[spec], [self.visit_expr(x) for x in inputs],
                             relax.TensorType([1, spec.heads, 1, spec.head_dim], "float32"))
        for op, value in core.tails:
            out = self.builder_.emit(out)
            out = relax.op.reshape(out, value.args[1]) if op == "relax.reshape" else relax.op.permute_dims(out, value.attrs.axes)
        self.rewrites += 1
        return out

    def _reads_a_cache(self, call) -> bool:
        """Whether a declined group reads a cache write within a few bindings (only those are worth a reason)."""
        stack = [(arg, 0) for arg in call.args if isinstance(arg, relax.Var)]
        while stack:
            expr, depth = stack.pop()
            if self.caches.write(expr) is not None:
                return True
            value = self.caches._value(expr)
            if depth < 4 and isinstance(value, relax.Call):
                stack.extend((a, depth + 1) for a in value.args if isinstance(a, relax.Var))
        return False


@tvm.transform.module_pass(opt_level=0, name="AutoGLMDecodeAttention")
def decode_attention_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    from ..schedule_rules._common import vector_lanes

    has_writes = any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and f.attrs.get("autoglm.kernel") == CACHE_WRITE_KERNEL
                     for _, f in mod.functions.items())
    if not has_writes:
        return mod
    target = tvm.target.Target.current(allow_none=True)
    lanes = vector_lanes(target, "float32") if target is not None and target.kind.name == "llvm" else 8
    rewriter = _Rewriter(mod, lanes)
    out = mutate_graph_functions(mod, rewriter)
    tally = current()
    tally.rewrote(rewriter.rewrites)
    for reason in rewriter.declines:
        tally.declined(reason)
    return out if rewriter.rewrites else mod


@register_pass("decode_attention")
def decode_attention():
    """Generator decode: attention over the valid cache prefix, K and V read in place (no K^T copy)."""
    return decode_attention_pass
