"""``--quantize wint8``: weight-only int8 matmuls (int8 weights, fp32 activations and arithmetic).

Unlike ``--quantize int8`` (dynamic: activations quantized too, int32 accumulation) only
the weights change: each ``x @ W`` with a constant fp32 2-D ``W`` becomes a call of the
:mod:`.wint8_kernel` PrimFunc reading int8 panels and per-channel scales, converting to
fp32 in registers. That is what memory-bound decode wants: a quarter of the weight bytes
per token, no activation rounding, no extra kernel.

The rewrite runs on every Relax function of the pre-fusion module (``main`` and, for a
generator, ``prefill``), so a weight takes the same precision in both. Which weights it
may quantize is a set of weight fingerprints (:func:`weight_key`) chosen by
:mod:`.weight_only_budget` against onnxruntime; a site whose weight is not in the set
(or whose shape the kernel cannot prove it handles) is left as the fp32 ``R.matmul``.

Declined, left unchanged (``decline_reason`` names why): an activation that is not fp32 or
has no static shape, a matmul with a non-fp32 ``out_dtype``, a weight whose K does not match
the activation's last axis (a broadcasting 1-D activation: ``x[K] @ W`` is handled, batched
weights are not sites at all).
"""

from __future__ import annotations

import hashlib

import numpy as np
import tvm
from tvm import relax

from ..ir_utils import static_shape
from . import wint8_kernel
from .int8 import _const_weight


def weight_key(w: np.ndarray) -> str:
    """Fingerprint of a [K, N] fp32 weight as the matmul reads it (the same in main and prefill)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    return f"{w.shape[0]}x{w.shape[1]}:" + hashlib.sha1(w.tobytes()).hexdigest()[:16]


def matmul_weight(call, lookup=None) -> np.ndarray | None:
    """The constant fp32 [K, N] weight of an ``R.matmul`` (also through a 2-D transpose, ONNX Gemm transB).

    ``lookup`` (a mutator's ``lookup_binding``) follows a weight bound to a variable first
    (``wt = permute_dims(W^T); matmul(x, wt)``, as the ONNX Gemm converter emits it).
    """
    if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
        return None
    operand = call.args[1]
    if lookup is not None and isinstance(operand, relax.Var):
        bound = lookup(operand)
        operand = bound if bound is not None else operand
    return _const_weight(operand)


def decline_reason(call, w: np.ndarray) -> str | None:
    """Why the kernel cannot take this matmul site (None: it can)."""
    x_ty = call.args[0].ty
    if not isinstance(x_ty, relax.TensorType) or x_ty.dtype != "float32":
        return f"activation is {getattr(x_ty, 'dtype', x_ty)}, not float32"
    if call.attrs.out_dtype not in (None, "", "float32", "void"):
        return f"out_dtype {call.attrs.out_dtype}, expected float32"
    shape = static_shape(call.args[0])
    if shape is None or len(shape) < 1:
        return "activation shape is not static"
    if int(shape[-1]) != w.shape[0]:
        return f"activation's last axis {shape[-1]} != weight rows {w.shape[0]}"
    return None


@relax.expr_functor.mutator
class _WeightOnlyRewriter(relax.PyExprMutator):
    """Replaces each allowed site by reshape -> wint8 kernel call -> (slice) -> reshape."""

    def __init__(self, mod, allowed, width: int):
        super().__init__(mod)
        self.allowed = allowed  # (key, weight) -> bool; None: every site the kernel takes
        self.width = width
        self.kernels: dict[tuple, relax.GlobalVar] = {}
        self.sites: list[dict] = []

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        w = matmul_weight(call, self.lookup_binding)
        if w is None:
            return call
        key = weight_key(w)
        site = {"key": key, "weight_shape": [int(d) for d in w.shape], "precision": "fp32"}
        self.sites.append(site)
        reason = decline_reason(call, w)
        if reason is not None:
            site["declined"] = reason
            return call
        if self.allowed is not None and not self.allowed(key, w):
            return call
        site["precision"] = "wint8"
        return self._emit_kernel(call.args[0], w)

    def _emit_kernel(self, x, w: np.ndarray):
        emit = self.builder_.emit
        k, n = w.shape
        lead = [int(d) for d in static_shape(x)[:-1]]
        rows = int(np.prod(lead)) if lead else 1
        wq, scale = wint8_kernel.quantize_per_channel(w)
        panels, scale_padded = wint8_kernel.pack_panels(wq, scale, self.width)
        padded_n = panels.shape[0] * self.width
        gv = self.kernels.get((rows, k, panels.shape[0]))
        if gv is None:
            func = wint8_kernel.wint8_matmul_func(rows, k, panels.shape[0], self.width)
            gv = self.builder_.add_func(func, f"wint8_matmul_{rows}x{k}x{padded_n}")
            self.kernels[(rows, k, panels.shape[0])] = gv
        x2 = emit(relax.op.reshape(x, [rows, k]))
        y = emit(relax.call_tir(gv, [x2, relax.const(panels, "int8"), relax.const(scale_padded, "float32")],
                                relax.TensorType((rows, padded_n), "float32")))
        if padded_n != n:
            y = emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[n]))
        return relax.op.reshape(y, [*lead, n])


#: function attributes of grouped / offloaded subgraphs (FuseOpsByPattern, BYOC): their ops stay as grouped
GROUPED_ATTRS = ("Composite", "Primitive", "Codegen")


def relax_functions(mod: tvm.IRModule) -> list[str]:
    """Names of the module's graph-level Relax functions (main, prefill, shape variants), not grouped subgraphs."""
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, relax.Function) and not any(a in (f.attrs or {}) for a in GROUPED_ATTRS)]


def rewrite(mod: tvm.IRModule, allowed, target) -> tuple[tvm.IRModule, dict[str, list[dict]]]:
    """Every Relax function of ``mod`` with its allowed sites on the wint8 kernel; returns (module, sites per function).

    ``allowed``: a set of weight keys (:func:`weight_key`) or a predicate ``(key, weight) -> bool``
    saying which weights may be quantized; None allows every site the kernel takes. Sites whose
    weight is not allowed, or that are declined, stay ``R.matmul``.
    """
    if isinstance(allowed, (set, frozenset)):
        keys = allowed
        allowed = lambda key, _w: key in keys  # noqa: E731
    width = wint8_kernel.panel_width(target)
    sites: dict[str, list[dict]] = {}
    for name in relax_functions(mod):
        rewriter = _WeightOnlyRewriter(mod, allowed, width)
        func = rewriter.visit_expr(mod[name])
        rewriter.builder_.update_func(mod.get_global_var(name), func)
        mod = tvm.IRModule(dict(rewriter.builder_.get().functions.items()), attrs=mod.attrs)
        sites[name] = rewriter.sites
    return mod, sites

