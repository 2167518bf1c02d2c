"""The standard ONNX ``Attention`` op (opset 23/24), which LLM exports now emit.

TVM 0.27 maps ``Attention`` to its converter for Microsoft's contrib op (a packed QKV
weight and a ``num_heads`` attribute), so a standard node fails to import with
``'num_heads'``. This converter follows the ONNX reference implementation
(``onnx/reference/ops/op_attention.py``):

* Q, K, V either 4-D ``(batch, heads, seq, head_size)`` or 3-D ``(batch, seq, heads *
  head_size)`` with ``q_num_heads`` / ``kv_num_heads``; grouped-query attention repeats
  each KV head ``q_num_heads / kv_num_heads`` times;
* ``scale`` (default ``1/sqrt(head_size)``), ``softcap`` (``c * tanh(s / c)`` before the mask);
* ``attn_mask``: bool (True attends) or additive float, padded with "masked" up to the
  key length when shorter; ``is_causal``: key ``j`` attends query ``i`` iff
  ``j <= i + past_length``; a row whose bias masks every key gives zeros (not NaN);
* ``past_key`` / ``past_value``: concatenated before the new keys; ``present_key`` /
  ``present_value`` outputs are the concatenations;
* ``qk_matmul_output`` (output 3) as the reference computes it: modes 0 and 1 the scaled
  (and soft-capped) QK, mode 2 with the bias added, mode 3 the softmax;
* ``softmax_precision``: the softmax runs in that float type.

What it does not implement (``nonpad_kv_seqlen``, sliding windows) is refused up front by ``support_rules``; reaching it here raises.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as base

from . import register


def _shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape.values]


def _to_heads(bb, x, num_heads: int):
    """(B, S, H*D) -> (B, H, S, D)."""
    batch, seq, hidden = _shape(x)
    x = bb.emit(relax.op.reshape(x, [batch, seq, num_heads, hidden // num_heads]))
    return bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))


def _float_bias(bb, mask, dtype: str, kv_len: int):
    """The additive bias of ``attn_mask``: bool -> 0 / -inf; padded with "masked" up to ``kv_len`` keys."""
    shape = _shape(mask)
    is_bool = str(mask.ty.dtype) == "bool"
    if shape[-1] < kv_len:
        pad_shape = shape[:-1] + [kv_len - shape[-1]]
        pad = relax.const(np.zeros(pad_shape, "bool") if is_bool else np.full(pad_shape, -np.inf, dtype))
        mask = bb.emit(relax.op.concat([mask, pad], axis=-1))
    if is_bool:
        return bb.emit(relax.op.where(mask, relax.const(0.0, dtype), relax.const(-np.inf, dtype)))
    return mask if str(mask.ty.dtype) == dtype else bb.emit(relax.op.astype(mask, dtype))


@register("Attention")
class Attention(base.OnnxOpConverter):
    """ONNX Attention-23 (and -24 without ``nonpad_kv_seqlen``)."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        name = attr["tvm_custom"]["name"] or "Attention"
        num_outputs = attr["tvm_custom"]["num_outputs"]
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask, past_k, past_v = inputs[3], inputs[4], inputs[5]
        if inputs[6] is not None or attr.get("left_window_size", -1) >= 0 or attr.get("right_window_size", -1) >= 0:
            raise ValueError(f"Attention node '{name}': nonpad_kv_seqlen / sliding windows are not implemented")
        mode = int(attr.get("qk_matmul_output_mode", 0))
        softcap = float(attr.get("softcap", 0.0))
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"Attention node '{name}': qk_matmul_output_mode={mode} is not one of 0, 1, 2, 3")
        dtype = str(q.ty.dtype)
        three_d = len(_shape(q)) == 3
        if three_d:
            q_heads, kv_heads = int(attr["q_num_heads"]), int(attr["kv_num_heads"])
            q, k, v = _to_heads(bb, q, q_heads), _to_heads(bb, k, kv_heads), _to_heads(bb, v, kv_heads)
        q_heads, q_len, head_size = _shape(q)[1:]
        past_len = 0
        if past_k is not None:
            past_len = _shape(past_k)[2]
            k = bb.emit(relax.op.concat([past_k, k], axis=2))
            v = bb.emit(relax.op.concat([past_v, v], axis=2))
        present_k, present_v = k, v
        kv_heads, kv_len = _shape(k)[1], _shape(k)[2]
        if kv_heads != q_heads:
            k = bb.emit(relax.op.repeat(k, q_heads // kv_heads, axis=1))
            v = bb.emit(relax.op.repeat(v, q_heads // kv_heads, axis=1))

        scale = attr.get("scale")
        scale = float(scale) if scale is not None else 1.0 / math.sqrt(head_size)
        scores = bb.emit(relax.op.matmul(q, relax.op.permute_dims(k, [0, 1, 3, 2])))
        scores = bb.emit(relax.op.multiply(scores, relax.const(scale, dtype)))
        if softcap > 0:
            capped = relax.op.tanh(relax.op.divide(scores, relax.const(softcap, dtype)))
            scores = bb.emit(relax.op.multiply(capped, relax.const(softcap, dtype)))
        qk_output = scores

        bias, may_mask_a_row = None, False
        if mask is not None:
            bias = _float_bias(bb, mask, dtype, kv_len)
            may_mask_a_row = True
        if int(attr.get("is_causal", 0)):
            rows = np.arange(q_len)[:, None]
            cols = np.arange(kv_len)[None, :]
            causal = relax.const(np.where(cols <= rows + past_len, 0.0, -np.inf).astype(dtype))
            bias = causal if bias is None else bb.emit(relax.op.add(bias, causal))
        if bias is not None:
            scores = bb.emit(relax.op.add(scores, bias))
        if mode == 2:
            qk_output = scores

        precision = attr.get("softmax_precision")
        soft_dtype = onnx.helper.tensor_dtype_to_np_dtype(int(precision)).name if precision is not None else dtype
        if soft_dtype != dtype:
            scores = bb.emit(relax.op.astype(scores, soft_dtype))
        probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
        if soft_dtype != dtype:
            probs = bb.emit(relax.op.astype(probs, dtype))
        if may_mask_a_row:
            # A row with every key masked: softmax of all -inf is NaN; the reference gives 0.
            # (Not max(bias) == -inf: TVM's max starts from the lowest finite float, never -inf.)
            masked = relax.op.astype(relax.op.equal(bias, relax.const(-np.inf, dtype)), "int8")
            row_masked = relax.op.equal(relax.op.min(masked, axis=-1, keepdims=True), relax.const(1, "int8"))
            probs = bb.emit(relax.op.where(row_masked, relax.const(0.0, dtype), probs))
        if mode == 3:
            qk_output = probs

        out = bb.emit(relax.op.matmul(probs, v))
        if three_d:
            batch, heads, seq, v_size = _shape(out)
            out = bb.emit(relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), [batch, seq, heads * v_size]))
        if num_outputs <= 1:
            return out
        results = [out, present_k, present_v, qk_output]
        return relax.Tuple(results[:num_outputs])
