"""ONNX LSTM / GRU / RNN (TVM 0.27's frontend has none) for static sequence lengths.

Each node becomes two pieces:

1. the input projection of every timestep and direction as one GEMM,
   ``X[seq*batch, input] @ W_packed^T + bias`` (Relax ``matmul`` + ``add``: the default
   Matmul rule or a tuning record schedules it like any dense layer);
2. the recurrence as one hand-written kernel (:mod:`.rnn_kernel`).

The weights are packed here, in numpy, so W, R and B must be constants (initializers or
``Constant`` nodes); ``initial_h`` / ``initial_c`` may be graph inputs.

Handled: directions forward / reverse / bidirectional, ``layout`` 0 and 1, optional B,
initial_h, initial_c, all outputs, GRU ``linear_before_reset`` 0 and 1, the default
activations (LSTM Sigmoid/Tanh/Tanh, GRU Sigmoid/Tanh, RNN Tanh), float32.
``sequence_lens`` must be absent or a constant equal to the sequence length for every
batch entry. Everything else (other activations, ``clip``, ``input_forget``, LSTM
peepholes ``P``) is refused by the support check, one line per node (:func:`refusal`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import UnsupportedModelError
from . import register
from .checks import NodeContext, attributes, register_check
from .rnn_kernel import GATES, RecurrenceShape, build_recurrence, packed_row_order

_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
#: Input positions (ONNX): X, W, R, B, sequence_lens, initial_h, initial_c (LSTM), P (LSTM).
_X, _W, _R, _B, _SEQ_LENS, _H0, _C0, _P = range(8)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def attribute_refusal(op: str, attrs: dict) -> str | None:
    """Why the node's attributes are outside what the converter handles (None: they are fine)."""
    direction = _text(attrs.get("direction", b"forward"))
    if direction not in _DIRECTIONS:
        return f"attribute direction={direction!r}, expected forward, reverse or bidirectional"
    if "hidden_size" not in attrs:
        return "attribute hidden_size is missing"
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        return f"attribute layout={layout}, expected 0 or 1"
    if "clip" in attrs:
        return f"attribute clip={attrs['clip']} is not supported (expected no clip)"
    if op == "LSTM" and int(attrs.get("input_forget", 0)) != 0:
        return f"attribute input_forget={attrs['input_forget']} is not supported (expected 0)"
    if op == "GRU" and int(attrs.get("linear_before_reset", 0)) not in (0, 1):
        return f"attribute linear_before_reset={attrs['linear_before_reset']}, expected 0 or 1"
    if "activations" in attrs:
        given = tuple(_text(a) for a in attrs["activations"])
        expected = _DEFAULT_ACTIVATIONS[op] * _DIRECTIONS[direction]
        if given != expected:
            return f"attribute activations={list(given)} is not supported (expected the default {list(expected)})"
    return None


def _name(node, position: int) -> str:
    return node.input[position] if len(node.input) > position else ""


@register_check("LSTM", "GRU", "RNN")
def refusal(node, ctx: NodeContext) -> str | None:
    """The support check of an RNN node: attributes, then which inputs must be constant."""
    reason = attribute_refusal(node.op_type, attributes(node))
    if reason:
        return reason
    for position, what in ((_W, "W"), (_R, "R"), (_B, "B")):
        name = _name(node, position)
        if name and not ctx.is_constant(name) and (ctx.folded or name in ctx.graph_inputs):
            return f"input {what} ('{name}') must be a constant initializer (the weights are packed at compile time)"
    if node.op_type == "LSTM" and _name(node, _P):
        return f"input P ('{_name(node, _P)}', peepholes) is not supported"
    seq_lens = _name(node, _SEQ_LENS)
    if seq_lens:
        value = ctx.constant(seq_lens)
        if value is None:
            if ctx.folded or seq_lens in ctx.graph_inputs:
                return f"input sequence_lens ('{seq_lens}') is not a constant; only full-length sequences are supported"
        elif value.size and np.any(value != value.reshape(-1)[0]):
            return f"input sequence_lens ('{seq_lens}') = {value.tolist()} differ; only full-length sequences are supported"
    return None


def _const(expr, node: str, what: str) -> np.ndarray:
    if not isinstance(expr, tvm.ir.GenericConst):
        raise UnsupportedModelError(f"node '{node}': input {what} must be a constant initializer (the weights are packed at compile time)")
    return expr.value.numpy()


def _static_shape(expr, node: str, what: str) -> list[int]:
    try:
        return [int(d) for d in expr.ty.shape.values]
    except (AttributeError, TypeError):
        raise UnsupportedModelError(f"node '{node}': input {what} needs a static shape (got {expr.ty})") from None


def _target_lanes() -> int:
    """float32 lanes of the target's vectors (8 when no target is in scope); refuses GPU targets."""
    from tvm.target import Target

    target = Target.current(allow_none=True)
    if target is None:
        return 8
    if target.kind.name != "llvm":
        raise UnsupportedModelError(f"LSTM/GRU/RNN are only supported on CPU (llvm) targets, not {target.kind.name}")
    from ..schedule_rules._common import vector_lanes

    return vector_lanes(target, "float32")


class _RecurrentConverter(OnnxOpConverter):
    op = ""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        node = attr["tvm_custom"]["name"] or cls.op
        reason = attribute_refusal(cls.op, attr)
        if reason:
            raise UnsupportedModelError(f"{cls.op} node '{node}': {reason}")
        if cls.op == "LSTM" and inputs[_P] is not None:
            raise UnsupportedModelError(f"LSTM node '{node}': input P (peepholes) is not supported")
        x = inputs[_X]
        if x.ty.dtype != "float32":
            raise UnsupportedModelError(f"{cls.op} node '{node}': input X is {x.ty.dtype}, only float32 is supported")
        layout = int(attr.get("layout", 0))
        x_shape = _static_shape(x, node, "X")
        if layout == 1:
            x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
            x_shape = [x_shape[1], x_shape[0], x_shape[2]]
        seq, batch, input_size = x_shape
        direction = _text(attr.get("direction", b"forward"))
        dirs = _DIRECTIONS[direction]
        hidden = int(attr["hidden_size"])
        gates = GATES[cls.op.lower()]
        w = _const(inputs[_W], node, "W").astype("float32")
        r = _const(inputs[_R], node, "R").astype("float32")
        if w.shape != (dirs, gates * hidden, input_size) or r.shape != (dirs, gates * hidden, hidden):
            raise UnsupportedModelError(
                f"{cls.op} node '{node}': W {list(w.shape)} / R {list(r.shape)} do not match "
                f"directions={dirs}, hidden_size={hidden}, input size={input_size}"
            )
        if inputs[_B] is not None:
            bias = _const(inputs[_B], node, "B").astype("float32").reshape(dirs, 2, gates * hidden)
        else:
            bias = np.zeros((dirs, 2, gates * hidden), "float32")
        _check_sequence_lens(inputs[_SEQ_LENS], node, seq, batch)

        lbr = cls.op == "GRU" and int(attr.get("linear_before_reset", 0)) == 1
        shape = RecurrenceShape(cls.op.lower(), seq, batch, hidden, dirs, direction == "reverse", lbr, _target_lanes())
        order = packed_row_order(shape)

        def pack_rows(a):  # [dirs, gates*hidden, ...] -> [dirs, packed_width, ...], padding rows zero
            padded = np.concatenate([a, np.zeros_like(a[:, :1])], axis=1)
            return padded[:, np.where(order >= 0, order, a.shape[1])]

        recurrent_bias = bias[:, 1].copy()
        input_bias = bias[:, 0] + recurrent_bias
        if lbr:  # the h gate's recurrent bias sits inside r * (...): it goes to the kernel, not the projection
            input_bias[:, 2 * hidden :] = bias[:, 0, 2 * hidden :]
        w_packed = pack_rows(w)  # [dirs, PW, input]
        projection = bb.emit(
            relax.op.add(
                relax.op.matmul(
                    relax.op.reshape(x, [seq * batch, input_size]),
                    relax.const(np.ascontiguousarray(w_packed.reshape(dirs * shape.packed_width, input_size).T)),
                ),
                relax.const(pack_rows(input_bias[:, :, None])[:, :, 0].reshape(-1)),
            )
        )
        xw = bb.emit(relax.op.reshape(projection, [seq, batch, dirs, shape.packed_width]))
        r_packed = pack_rows(r).reshape(dirs, shape.tiles, gates * shape.tile, hidden).transpose(0, 1, 3, 2)
        args = [xw, relax.const(np.ascontiguousarray(r_packed)), cls._state(bb, inputs[_H0], layout, shape, node, "initial_h")]
        if cls.op == "LSTM":
            args.append(cls._state(bb, inputs[_C0], layout, shape, node, "initial_c"))
        if lbr:
            args.append(relax.const(pack_rows(recurrent_bias[:, :, None])[:, :, 0]))
        state_ty = relax.TensorType([dirs, batch, hidden], "float32")
        out_ty = [relax.TensorType([seq, dirs, batch, hidden], "float32"), state_ty] + ([state_ty] if cls.op == "LSTM" else [])
        kernel = bb.add_func(build_recurrence(shape), f"{cls.op.lower()}_recurrence")
        result = bb.emit(relax.call_tir(kernel, args, out_ty))
        outputs = [bb.emit(relax.TupleGetItem(result, i)) for i in range(len(out_ty))]
        if layout == 1:
            outputs = [bb.emit(relax.op.permute_dims(outputs[0], [2, 0, 1, 3]))] + [
                bb.emit(relax.op.permute_dims(o, [1, 0, 2])) for o in outputs[1:]
            ]
        return relax.Tuple(outputs)

    @staticmethod
    def _state(bb, expr, layout, shape: RecurrenceShape, node: str, what: str):
        """An initial state as [dirs, batch, hidden] (zeros when absent)."""
        expected = [shape.directions, shape.batch, shape.hidden]
        if expr is None:
            return relax.const(np.zeros(expected, "float32"))
        if layout == 1:
            expr = bb.emit(relax.op.permute_dims(expr, [1, 0, 2]))
        got = _static_shape(expr, node, what)
        if got != expected or expr.ty.dtype != "float32":
            raise UnsupportedModelError(f"node '{node}': {what} is {expr.ty.dtype} {got}, expected float32 {expected} (layout 0 order)")
        return expr


def _check_sequence_lens(expr, node: str, seq: int, batch: int) -> None:
    if expr is None:
        return
    if not isinstance(expr, tvm.ir.GenericConst):
        raise UnsupportedModelError(f"node '{node}': input sequence_lens is not a constant; only full-length sequences are supported")
    value = expr.value.numpy()
    if value.size != batch or np.any(value != seq):
        raise UnsupportedModelError(
            f"node '{node}': input sequence_lens = {value.tolist()}, only full-length sequences ({seq} for each of {batch}) are supported"
        )


@register("LSTM")
class LSTM(_RecurrentConverter):
    op = "LSTM"


@register("GRU")
class GRU(_RecurrentConverter):
    op = "GRU"


@register("RNN")
class RNN(_RecurrentConverter):
    op = "RNN"
