"""Prefill computes the logits of one position (the prompt's last), not of the whole chunk.

Generation needs only the last prompt position's logits from prefill (the first new token);
the ONNX graph computes the LM head for every position of the chunk. With a 50k vocabulary
that one matmul (``[chunk, hidden] x [hidden, vocab]``) is a fifth of pythia-160m's prefill
(60 of 295 ms at chunk 128). The rewrite takes the LM head's input row at a new scalar input
``prefill_last_index`` (the prompt's last position inside the padded chunk) before the matmul:
``logits = x @ W (+ b)`` becomes ``take(x, last, axis=1) @ W (+ b)``, ``[1, 1, vocab]``.

It applies only where it can prove the logits are that matmul and nothing else reads them:
the returned logits are ``R.matmul(x, W)`` or ``R.add(R.matmul(x, W), b)`` with ``x`` of
rank 3 ``[1, chunk, hidden]``, and neither the logits nor the matmul result has another
use. Otherwise it declines (the reason is returned) and prefill keeps every position's
logits; the manifest records which (``generator.prefill_logits``: ``last`` or ``all``), and
the runner passes the index only to a ``last`` build.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .kv_rewrite import returned_tuple

LAST_INDEX_INPUT = "prefill_last_index"


def _uses(func: relax.Function) -> dict:
    """var -> number of reads inside ``func`` (the return counts as one)."""
    counts: dict = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


def _bindings(func: relax.Function) -> dict:
    bound = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding):
                bound[binding.var] = binding.value
    return bound


def _is_op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def find_lm_head(func: relax.Function, logits_index: int):
    """(matmul var, reason): the LM-head matmul binding whose input row can be taken, or (None, why not)."""
    returned = returned_tuple(func)
    if returned is None or logits_index >= len(returned.fields):
        return None, f"prefill returns no tuple with the logits at output {logits_index}"
    logits = returned.fields[logits_index]
    bound = _bindings(func)
    uses = _uses(func)
    if not isinstance(logits, relax.Var) or logits not in bound:
        return None, "the logits output is not bound in prefill"
    if uses.get(logits, 0) != 1:
        return None, "the logits are read inside prefill, not only returned"
    value = bound[logits]
    matmul_var = logits
    if _is_op(value, "relax.add"):
        lhs, rhs = value.args
        matmul_var = lhs if isinstance(lhs, relax.Var) and _is_op(bound.get(lhs), "relax.matmul") else (
            rhs if isinstance(rhs, relax.Var) and _is_op(bound.get(rhs), "relax.matmul") else None)
        if matmul_var is None:
            return None, "the logits are an add of no matmul"
        bias = rhs if matmul_var.same_as(lhs) else lhs
        bias_shape = getattr(bias.ty, "shape", None)
        if bias_shape is None or len(bias_shape) > 1:  # a [vocab] or scalar bias broadcasts over the one row
            return None, "the logits' bias is not a vector over the vocabulary"
        if uses.get(matmul_var, 0) != 1:
            return None, "the LM-head matmul is read elsewhere too"
        value = bound[matmul_var]
    if not _is_op(value, "relax.matmul"):
        return None, f"the logits are {getattr(value.op, 'name', type(value).__name__)}, not an LM-head matmul"
    x = value.args[0]
    shape = getattr(x.ty, "shape", None)
    if shape is None or len(shape) != 3 or not isinstance(shape[0], tvm.tirx.IntImm) or int(shape[0]) != 1:
        return None, "the LM head's input is not [1, chunk, hidden]"
    if len(getattr(value.args[1].ty, "shape", [])) != 2:
        return None, "the LM head's weight is not 2-D"
    return matmul_var, None


def take_last_row(mod: tvm.IRModule, func_name: str, logits_index: int) -> tuple[tvm.IRModule, str | None]:
    """(mod with ``func_name`` computing one logits row at a new last param, None) or (mod unchanged, reason)."""
    func = mod[func_name]
    matmul_var, reason = find_lm_head(func, logits_index)
    if matmul_var is None:
        return mod, reason
    last = relax.Var(LAST_INDEX_INPUT, relax.TensorType([1], "int64"))

    @mutator
    class _TakeLastRow(PyExprMutator):
        def visit_var_binding_(self, binding):
            if binding.var.same_as(matmul_var):
                call = binding.value
                row = self.builder_.emit(relax.op.take(self.visit_expr(call.args[0]), last, axis=1), "lm_head_row")
                new = relax.Call(call.op, [row, self.visit_expr(call.args[1])], call.attrs)
                emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
                self.set_var_remap(binding.var, emit(new, binding.var.name))
                return
            super().visit_var_binding_(binding)

    rewriter = _TakeLastRow(mod)
    body = rewriter.visit_expr(func.body)
    out = rewriter.builder_.get()
    out[func_name] = relax.Function([*func.params, last], body, None, func.is_pure, func.attrs)
    return out, None
