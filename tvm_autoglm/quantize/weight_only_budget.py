"""Which weights ``--quantize wint8`` may quantize: per layer, by measured output error under ``--accuracy-budget``.

Error measure: the model's float outputs (a decoder: its logits only) are cut into rows
along their last axis (the logits of each position for a decoder); ``error = 1 - min over
rows of cosine(fp32 row, quantized row)``. The worst row, not the mean: one position whose logits turn is a
different greedy token. ``--accuracy-budget B`` (default 0.01) keeps every row's cosine
>= 1 - B.

Measured with onnxruntime on the source ONNX, each quantized layer's weight replaced by
its dequantized int8 value (what our kernel multiplies by: same products, only the fp32
summation order differs), on seeded inputs (a decoder: random prompts continued by their own fp32 greedy tokens, fed
as one batch with an empty cache, so that the rows are the decode positions a user's
generation reaches, not only a prompt's). It is thus independent of our own build and needs
no compile per trial.

A Relax weight that is several measured ONNX weights side by side (``merge_parallel_matmul``
concatenates the q/k/v and gate/up projections along N) may be quantized when every part
was chosen: scales are per output channel, so quantizing the concatenation is quantizing
each part (:class:`Approval` proves the decomposition column range by column range).

Search: all layers int8; if that breaks the budget, each layer alone (its sensitivity),
then the longest least-sensitive-first list of layers whose measured error stays within the
budget, found by bisection (the rest stay fp32).

A layer is one MatMul / Gemm node whose B input is a 2-D fp32 initializer (keyed by
``weight_only.weight_key`` of the weight as the matmul reads it, transposed for Gemm
``transB``); a weight the Relax build has but no such node names (folded, shared through a
Transpose) is not measured and so stays fp32.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import AutoGLMError
from . import wint8_kernel
from .weight_only import weight_key

DEFAULT_BUDGET = 0.01
#: prompt tokens of the random prompt a decoder is measured on
PROMPT_TOKENS = 32


@dataclasses.dataclass
class Layer:
    """One quantizable ONNX node: its name, the initializer it reads and the [K, N] weight key."""

    node: str
    initializer: str
    key: str
    transposed: bool  # Gemm transB: the initializer is [N, K]
    shape: tuple[int, int]
    first_column: str = ""  # weight_key of column 0 (finds the layer inside a column-concatenated weight)


def onnx_layers(proto) -> list[Layer]:
    """MatMul / Gemm nodes of ``proto`` with a 2-D fp32 initializer as B, in graph order."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    layers = []
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        tensor = inits[node.input[1]]
        if tensor.data_type != 1 or len(tensor.dims) != 2:  # FLOAT
            continue
        transposed = False
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if "transA" in attrs and attrs["transA"].i:
                continue
            transposed = bool(attrs["transB"].i) if "transB" in attrs else False
        w = numpy_helper.to_array(tensor)
        w = w.T if transposed else w
        layers.append(Layer(node.name or f"{node.op_type}_{i}", node.input[1], weight_key(w), transposed,
                            tuple(int(d) for d in w.shape), weight_key(w[:, :1])))
    return layers


def fake_quantized(w: np.ndarray) -> np.ndarray:
    """The fp32 weight our kernel effectively multiplies by (int8 per-channel, dequantized)."""
    wq, scale = wint8_kernel.quantize_per_channel(w)
    return (wq.astype(np.float32) * scale[None, :]).astype(np.float32)


def row_error(reference: list[np.ndarray], quantized: list[np.ndarray]) -> float:
    """1 - the smallest cosine over the last-axis rows of every float output (0 for identical outputs)."""
    worst = 1.0
    for ref, got in zip(reference, quantized):
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        rows_ref = ref.reshape(-1, ref.shape[-1]) if ref.ndim and ref.shape[-1] >= 16 else ref.reshape(1, -1)
        rows_got = got.reshape(rows_ref.shape)
        num = (rows_ref * rows_got).sum(axis=1)
        den = np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_got, axis=1)
        same = np.all(rows_ref == rows_got, axis=1)
        cos = np.where(same, 1.0, num / np.maximum(den, 1e-300))
        worst = min(worst, float(cos.min()))
    return 1.0 - worst


class OrtProbe:
    """onnxruntime on ``proto`` with any set of layers fake-quantized: one session, the layers' weights fed as inputs.

    Every measured weight becomes a graph input (a weight another node also reads, or a graph
    output, gets an input of its own for the layer's node), so a trial only swaps arrays in the
    feeds: one session for the whole search instead of one per trial (a 160M-parameter model
    spent 8 s per trial re-serializing and re-optimizing 650 MB). onnxruntime then cannot
    constant-fold those weights, which changes its speed, not its arithmetic.
    """

    def __init__(self, proto, layers: list[Layer], threads: int = 0):
        import onnx
        from onnx import helper, numpy_helper

        from ..measure.candidates import ort_session

        moved = {layer.initializer for layer in layers}
        self.proto = onnx.ModelProto()
        self.proto.CopyFrom(proto)
        inits = {t.name: t for t in proto.graph.initializer}
        readers: dict[str, int] = {}
        for node in proto.graph.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
        outputs = {o.name for o in proto.graph.output}
        private = {name for name in moved if readers.get(name, 0) == 1 and name not in outputs}
        kept = [t for t in self.proto.graph.initializer if t.name not in private]
        del self.proto.graph.initializer[:]
        self.proto.graph.initializer.extend(kept)
        index = {(n.name or f"{n.op_type}_{i}"): n for i, n in enumerate(self.proto.graph.node)}
        self.by_node = {layer.node: layer for layer in layers}
        self.weights: dict[str, np.ndarray] = {}  # graph input -> the fp32 weight as the node reads it
        self.input_of: dict[str, str] = {}  # layer node -> its weight's graph input
        self._quantized: dict[str, np.ndarray] = {}
        for layer in layers:
            name = layer.initializer if layer.initializer in private else f"{layer.initializer}__wint8_{len(self.weights)}"
            index[layer.node].input[1] = name
            w = numpy_helper.to_array(inits[layer.initializer])
            self.weights[name] = w
            self.input_of[layer.node] = name
            self.proto.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(w.shape)))
        self.session = ort_session(self.proto.SerializeToString(), threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.feeds: dict[str, np.ndarray] = {}
        self.measured: list[str] = []
        self.reference: list[np.ndarray] = []

    def run(self, feeds: dict[str, np.ndarray], nodes=()) -> dict[str, np.ndarray]:
        """Every output by name, the layers in ``nodes`` on their dequantized int8 weights, the rest fp32."""
        weights = dict(self.weights)
        for node in nodes:
            weights[self.input_of[node]] = self._fake_quantized(node)
        return dict(zip(self.output_names, self.session.run(None, {**feeds, **weights})))

    def _fake_quantized(self, node: str) -> np.ndarray:
        if node not in self._quantized:  # cached: the search quantizes each layer in many trials
            layer, w = self.by_node[node], self.weights[self.input_of[node]]
            q = fake_quantized(w.T if layer.transposed else w)
            self._quantized[node] = np.ascontiguousarray(q.T if layer.transposed else q)
        return self._quantized[node]

    def measure_on(self, feeds: dict[str, np.ndarray], outputs=None) -> None:
        """Fix the inputs and the outputs (default: every float output) that :meth:`error` compares."""
        self.feeds = feeds
        values = self.run(feeds)
        self.measured = [n for n in (outputs or self.output_names) if np.asarray(values[n]).dtype.kind == "f"]
        self.reference = [values[n] for n in self.measured]

    def error(self, nodes) -> float:
        values = self.run(self.feeds, nodes)
        return row_error(self.reference, [values[n] for n in self.measured])


def choose(proto, feeds, budget: float | None, log=None, threads: int = 0, outputs=None) -> dict:
    """Per-layer choice: ``{"keys": set of weight keys to quantize, "layers": [...rows...], "error": measured, ...}``.

    ``feeds``: the inputs, or a function of the fp32 model (``run(feeds) -> outputs by name``)
    that returns them (a decoder's reference continues its prompt greedily, :mod:`wint8_build`).
    ``outputs``: the outputs the error is measured on (default: every float output).
    """
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    if not 0 < budget < 1:
        raise AutoGLMError(f"--accuracy-budget must be in (0, 1) (1 - worst logit cosine), got {budget}")
    layers = onnx_layers(proto)
    if not layers:
        return {"keys": set(), "approve": Approval([], set()), "layers": [], "layer_keys": [], "error": 0.0, "budget": budget}
    probe = OrtProbe(proto, layers, threads)
    probe.measure_on(feeds(probe.run) if callable(feeds) else feeds, outputs)
    names = [layer.node for layer in layers]
    all_error = probe.error(names)
    sensitivity: dict[str, float] = {}
    if all_error <= budget:
        chosen = list(names)
        measured = all_error
    else:
        for name in names:
            sensitivity[name] = probe.error([name])
        chosen, measured = _largest_prefix(probe, sorted(names, key=lambda n: sensitivity[n]), budget)
    keep = set(chosen)
    rows = []
    for layer in layers:
        row = {"layer": layer.node, "weight": layer.initializer, "weight_shape": list(layer.shape),
               "precision": "wint8" if layer.node in keep else "fp32"}
        if layer.node in sensitivity:
            row["error_alone"] = sensitivity[layer.node]
        if layer.node not in keep:
            row["why_fp32"] = (f"quantizing it too would exceed --accuracy-budget {budget:g}"
                               if layer.node in sensitivity else "")
        rows.append(row)
    # a weight key chosen for one node but refused for another (the same weight twice) stays fp32: both must agree
    refused = {layer.key for layer in layers if layer.node not in keep}
    keys = {layer.key for layer in layers if layer.node in keep and layer.key not in refused}
    return {"keys": keys, "approve": Approval(layers, keys), "layers": rows, "layer_keys": [layer.key for layer in layers], "error": measured, "error_all_int8": all_error, "budget": budget,
            "measure": f"1 - worst last-axis row cosine of {', '.join(outputs) if outputs else 'every float output'} vs fp32, "
                       f"onnxruntime, int8 weights dequantized, on inputs of shapes {_shapes(probe.feeds)}"}


def _shapes(feeds: dict) -> str:
    return ", ".join(f"{name}{list(np.shape(value))}" for name, value in feeds.items() if np.size(value))


def _largest_prefix(probe, ordered: list[str], budget: float) -> tuple[list[str], float]:
    """The longest prefix of ``ordered`` (least sensitive first) whose measured error is within ``budget``.

    Bisection: log2(L) onnxruntime runs instead of L (a 160M-parameter model costs seconds per run). The error
    of a prefix grows with its length to first order (independent rounding noise adds), which bisection
    assumes; the prefix it returns is *measured* within the budget either way.
    """
    low, high, best = 0, len(ordered), 0.0  # prefix[:low] is within budget; prefix[:high + 1] is not known
    while low < high:
        mid = (low + high + 1) // 2
        error = probe.error(ordered[:mid])
        if error <= budget:
            low, best = mid, error
        else:
            high = mid - 1
    return ordered[:low], best


class Approval:
    """``(key, weight) -> bool``: may this Relax weight be quantized? Yes if it is a chosen layer's weight, or the
    column concatenation of chosen layers' weights (every column range proven equal by fingerprint)."""

    def __init__(self, layers: list[Layer], chosen_keys: set[str]):
        self.chosen = chosen_keys
        self.merged_into: dict[str, str] = {}  # layer key -> key of the concatenated Relax weight that holds it
        self.by_first_column: dict[str, list[Layer]] = {}
        for layer in layers:
            if layer.key in chosen_keys:
                self.by_first_column.setdefault(layer.first_column, []).append(layer)

    def __call__(self, key: str, w: np.ndarray) -> bool:
        if key in self.chosen:
            return True
        column, parts = 0, []
        while column < w.shape[1]:
            part = next((layer for layer in self.by_first_column.get(weight_key(w[:, column:column + 1]), [])
                         if column + layer.shape[1] <= w.shape[1] and weight_key(w[:, column:column + layer.shape[1]]) == layer.key), None)
            if part is None:
                return False
            parts.append(part.key)
            column += part.shape[1]
        self.merged_into.update({part: key for part in parts})
        return True

