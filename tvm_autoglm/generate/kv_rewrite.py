"""Turn the KV cache ``concat(past, new)`` of a decode graph into an in-place write.

A Hugging Face decoder appends each layer's new key/value to the past with
``present = concat(past, new, axis=seq)``; run naively, every decode step copies the
whole cache into a new tensor (and the caller copies it back as the next ``past``).

The generator imports the decode graph with a *static* past length ``max_context - 1``,
so ``present`` has exactly ``max_context`` slots. This pass then replaces each

    present = R.concat((past_param, new), axis=2)          # [B, H, max_context, D]

by

    present = R.call_tir_inplace(write_kv, (cache_param, new, cache_position), 0)

where ``cache_param`` is a new function parameter of the present's shape (the
preallocated cache, kept by the caller between steps) and ``write_kv`` stores the new
rows at slot ``cache_position`` and nothing else. Attention downstream then reads the
caches: ``passes/decode_attention`` turns it into a kernel over slots ``0..cache_position``
only; where that pass declines (or at O1) it reads all ``max_context`` slots and the caller's
``attention_mask`` (1 on slots ``0..position``, 0 after) hides the unused ones. The order of the slots does not matter to
attention (positions are applied before caching, via ``position_ids``), so slot
``position`` standing in for "the last slot" is exact.

The pass refuses (one line) rather than leave any cache concat in place: a half
rewritten graph would still run, but with the caller's cache of the wrong size.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from ..errors import CompileError
from ..passes.decode_attention import CACHE_WRITE_KERNEL

#: Name of the parameter the pass adds: int64 [1], the cache slot of the step's first new token.
POSITION_INPUT = "cache_position"


def write_kernel(batch: int, heads: int, slots: int, new: int, head_dim: int, dtype: str) -> tirx.PrimFunc:
    """``cache[b, h, pos + s, :] = rows[b, h, s, :]`` for s < new; every other slot untouched.

    Emitted scheduled (one contiguous row copy per (b, h, s)); the caller guarantees
    ``pos + new <= slots`` (checked before every step on the host).
    """
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("write_kv_cache")
            cache = T.arg("cache", T.buffer((batch, heads, slots, head_dim), dtype))
            rows = T.arg("rows", T.buffer((batch, heads, new, head_dim), dtype))
            pos = T.arg("pos", T.buffer((1,), "int64"))
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8, "autoglm.kernel": CACHE_WRITE_KERNEL})
            start = tirx.Cast("int32", pos[0])
            with T.serial(0, batch * heads) as bh:
                with T.serial(0, new) as s:
                    with T.vectorized(0, head_dim) as d:
                        b, h = bh // heads, bh % heads
                        T.buffer_store(cache, rows[b, h, s, d], [b, h, start + s, d])
    # No global_symbol: the BlockBuilder names each added kernel uniquely (decode and prefill get one each).
    return ib.get().without_attr("global_symbol")


def _static_shape(ty, what: str) -> list[int]:
    try:
        return [int(v) for v in ty.shape.values]
    except (AttributeError, TypeError):
        raise CompileError(f"{what} has no static shape ({ty}); the generator imports the decode graph with static shapes") from None


def _cache_concats(func: relax.Function, cache_params: set) -> dict:
    """{past param: the concat Call that appends to it}, checking it is the param's only use."""
    concat_op = tvm.ir.Op.get("relax.concat")
    uses: dict = {p: 0 for p in cache_params}
    concats: dict = {}
    bad_axis: list = []  # raised after the walk: an exception inside the FFI visitor loses its type

    def visit(expr):
        if isinstance(expr, relax.Var) and expr in uses:
            uses[expr] += 1
        if isinstance(expr, relax.Call) and expr.op.same_as(concat_op) and isinstance(expr.args[0], relax.Tuple):
            fields = list(expr.args[0].fields)
            if len(fields) == 2 and fields[0] in uses:
                axis = int(expr.attrs.axis)
                if axis in (2, -2):
                    concats[fields[0]] = expr
                else:
                    bad_axis.append((fields[0].name, axis))

    relax.analysis.post_order_visit(func.body, visit)
    for name, axis in bad_axis:
        raise CompileError(f"cache input '{name}' is concatenated on axis {axis}, expected the sequence axis 2")
    for param, count in uses.items():
        if param not in concats:
            raise CompileError(f"cache input '{param.name}' does not feed a concat(past, new, axis=2); cannot use a preallocated cache")
        if count != 1:
            raise CompileError(f"cache input '{param.name}' has {count} uses, expected only its concat(past, new); cannot update it in place")
    return concats


def returned_tuple(func: relax.Function):
    """The Tuple expression ``func`` returns (directly, or bound to the returned var), or None."""
    body = func.body
    result = body.body if isinstance(body, relax.SeqExpr) else body
    if isinstance(result, relax.Tuple):
        return result
    if isinstance(result, relax.Var):
        for block in body.blocks:
            for binding in block.bindings:
                if binding.var.same_as(result) and isinstance(binding.value, relax.Tuple):
                    return binding.value
    return None


def rewrite_cache_concats(mod: tvm.IRModule, cache_param_indices: list[int], func_name: str = "main",
                          cache_slots: int | None = None) -> tvm.IRModule:
    """``mod`` with ``func_name``'s cache params turned into in-place caches and ``cache_position`` appended.

    ``cache_slots=None`` (decode): each ``concat(past, new)`` *becomes* the write into a cache
    param of the concat's shape, which replaces ``past``.

    ``cache_slots=max_context`` (prefill): ``past`` stays (masked dummy slots) and the concat
    stays for attention, which then sees only the prompt; a new cache param
    [B, H, cache_slots, D] per past gets the new rows written at ``cache_position`` and
    replaces the concat in the function's *outputs*, so the outputs are the caches.
    """
    keep_concat = cache_slots is not None
    func = mod[func_name]
    params = list(func.params)
    past = [params[i] for i in cache_param_indices]
    concats = _cache_concats(func, set(past))
    replacement = {}
    for p in past:
        shape = _static_shape(concats[p].ty, f"concat of cache input '{p.name}'")
        if keep_concat:
            shape[2] = int(cache_slots)
        replacement[p] = relax.Var(("cache_" if keep_concat else "") + p.name, relax.TensorType(shape, p.ty.dtype))
    position = relax.Var(POSITION_INPUT, relax.TensorType([1], "int64"))
    returned = returned_tuple(func)
    if keep_concat and returned is None:
        raise CompileError(f"{func_name}: the function does not return a tuple of outputs; cannot return the caches")

    @mutator
    class _Rewriter(PyExprMutator):
        def __init__(self, module):
            super().__init__(module)
            self.kernels: dict = {}
            self.written: dict = {}  # keep_concat: original concat var -> its cache write var

        def _write(self, cache, new):
            cshape = _static_shape(cache.ty, f"cache '{cache.name}'")
            nshape = _static_shape(new.ty, f"new rows of '{cache.name}'")
            key = (tuple(cshape), tuple(nshape), cache.ty.dtype)
            if key not in self.kernels:
                b, h, slots, d = cshape
                self.kernels[key] = self.builder_.add_func(write_kernel(b, h, slots, nshape[2], d, cache.ty.dtype), f"write_kv_cache_{nshape[2]}")
            return relax.call_tir_inplace(self.kernels[key], [cache, new, position], [0], cache.ty)

        def _cache_of(self, call):
            fields = list(call.args[0].fields) if call.args and isinstance(call.args[0], relax.Tuple) else []
            if fields and fields[0] in concats and concats[fields[0]].same_as(call):
                return fields
            return None

        def visit_var_binding_(self, binding):
            fields = self._cache_of(binding.value) if isinstance(binding.value, relax.Call) else None
            if keep_concat and fields:
                self.written[binding.var] = self.builder_.emit(self._write(replacement[fields[0]], self.visit_expr(fields[1])))
            super().visit_var_binding_(binding)

        def visit_tuple_(self, tup):
            if keep_concat and tup.same_as(returned) and any(f in self.written for f in tup.fields):
                return relax.Tuple([self.written[f] if f in self.written else self.visit_expr(f) for f in tup.fields])
            return super().visit_tuple_(tup)

        def visit_call_(self, call):
            fields = self._cache_of(call)
            if fields and not keep_concat:
                return self._write(replacement[fields[0]], self.visit_expr(fields[1]))
            return super().visit_call_(call)

    rewriter = _Rewriter(mod)
    body = rewriter.visit_expr(func.body)
    if keep_concat and len(rewriter.written) != len(past):
        raise CompileError(f"{func_name}: {len(rewriter.written)} of {len(past)} cache concats were rewritten")
    extra = [replacement[p] for p in past] if keep_concat else []
    new_params = [p if keep_concat else replacement.get(p, p) for p in params] + extra + [position]
    out = rewriter.builder_.get()
    out[func_name] = relax.Function(new_params, body, body.ty, func.is_pure, func.attrs)
    return out

