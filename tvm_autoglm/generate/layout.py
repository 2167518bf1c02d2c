"""Recognise the KV cache of a decoder-only ONNX model from its input and output names.

The Hugging Face / optimum layout: inputs ``input_ids``, ``attention_mask``, optional
``position_ids`` and ``past_key_values.{i}.key`` / ``.value`` [batch, kv_heads, past, head_dim];
outputs ``logits`` and ``present.{i}.key`` / ``.value`` [batch, kv_heads, past + seq, head_dim].
The name patterns can be overridden (regular expressions with two groups, the layer
number and ``key``/``value``, or named groups ``layer`` and ``kind``; kind ``k``/``v`` also works). Anything that does not fit is refused with one line
naming what was expected, because guessing which tensor is the cache would give wrong
tokens silently.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..errors import UnsupportedModelError

PAST_PATTERN = r"past_key_values\.(\d+)\.(key|value)"
PRESENT_PATTERN = r"present\.(\d+)\.(key|value)"
#: The cache's sequence axis in [batch, heads, seq, head_dim].
SEQ_AXIS = 2


@dataclass
class CacheLayout:
    """Where the cache and the token inputs are, by name; recorded in a generator's manifest."""

    input_ids: str
    attention_mask: str
    position_ids: str | None
    logits: str
    past: list[tuple[str, str]] = field(default_factory=list)  # per layer: (key input, value input)
    present: list[tuple[str, str]] = field(default_factory=list)  # per layer: (key output, value output)
    kv_heads: int = 0
    head_dim: int = 0
    dtype: str = "float32"
    seq_axis: int = SEQ_AXIS

    @property
    def layers(self) -> int:
        return len(self.past)

    def past_names(self) -> list[str]:
        return [name for pair in self.past for name in pair]

    def present_names(self) -> list[str]:
        return [name for pair in self.present for name in pair]

    def to_json(self) -> dict:
        data = asdict(self)
        data["past"] = [list(p) for p in self.past]
        data["present"] = [list(p) for p in self.present]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "CacheLayout":
        data = dict(data)
        data["past"] = [tuple(p) for p in data["past"]]
        data["present"] = [tuple(p) for p in data["present"]]
        return cls(**data)


_KINDS = {"key": "key", "k": "key", "value": "value", "v": "value"}


def _pairs(names: list[str], pattern: str, what: str, source: str) -> list[tuple[str, str]]:
    regex = re.compile(pattern)
    found: dict[int, dict[str, str]] = {}
    for name in names:
        match = regex.fullmatch(name)
        if match:
            if set(regex.groupindex) >= {"layer", "kind"}:
                layer, kind = match.group("layer"), match.group("kind")
            elif len(match.groups()) == 2:
                layer, kind = match.groups()
            else:
                raise UnsupportedModelError(f"cache name pattern {pattern!r} must have two groups (layer, key|value) or named groups 'layer' and 'kind'")
            kind = _KINDS.get(kind)
            if kind is None:
                raise UnsupportedModelError(f"cache name '{name}' matches {pattern!r} but its kind {match.groups()} is not key/k or value/v")
            found.setdefault(int(layer), {})[kind] = name
    if not found:
        raise UnsupportedModelError(f"{source}: no {what} matches {pattern!r} (got {', '.join(names) or 'none'})",
                                    hint="export the model with its KV cache (optimum / use_cache=True) or pass the cache name patterns")
    layers = sorted(found)
    if layers != list(range(len(layers))):
        raise UnsupportedModelError(f"{source}: {what} layers {layers} are not numbered 0..{len(layers) - 1}")
    pairs = []
    for layer in layers:
        kinds = found[layer]
        if set(kinds) != {"key", "value"}:
            raise UnsupportedModelError(f"{source}: {what} of layer {layer} has {sorted(kinds)}, expected key and value")
        pairs.append((kinds["key"], kinds["value"]))
    return pairs


def detect(model, source: str = "model", past_pattern: str = PAST_PATTERN, present_pattern: str = PRESENT_PATTERN) -> CacheLayout:
    """The cache layout of ``model`` (an ``onnx.ModelProto``), or one-line refusal."""
    from ..onnx_model import graph_inputs, graph_outputs

    inputs = {spec.name: spec for spec in graph_inputs(model)}
    outputs = [spec.name for spec in graph_outputs(model)]
    for needed in ("input_ids", "attention_mask"):
        if needed not in inputs:
            raise UnsupportedModelError(f"{source}: generation needs an input named '{needed}' (inputs: {', '.join(inputs)})")
    if "position_ids" not in inputs:
        # The preallocated cache writes token t at slot t while the graph is imported with a
        # fixed past length; positions therefore must come from an input, not from the past length.
        raise UnsupportedModelError(f"{source}: generation needs a 'position_ids' input (positions cannot be derived from the past length with a preallocated cache)",
                                    hint="export with position_ids as an input")
    logits = "logits" if "logits" in outputs else None
    if logits is None:
        raise UnsupportedModelError(f"{source}: generation needs an output named 'logits' (outputs: {', '.join(outputs)})")
    past = _pairs(list(inputs), past_pattern, "cache input", source)
    present = _pairs(outputs, present_pattern, "cache output", source)
    if len(past) != len(present):
        raise UnsupportedModelError(f"{source}: {len(past)} cache input layers but {len(present)} cache output layers")
    first = inputs[past[0][0]]
    if len(first.shape) != 4:
        raise UnsupportedModelError(f"{source}: cache input '{first.name}' has rank {len(first.shape)}, expected 4 [batch, heads, past, head_dim]")
    heads, head_dim = first.shape[1], first.shape[3]
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        raise UnsupportedModelError(f"{source}: cache input '{first.name}' has symbolic heads/head_dim {first.shape}; expected static")
    for name in (n for pair in past for n in pair):
        spec = inputs[name]
        if len(spec.shape) != 4 or spec.shape[1] != heads or spec.shape[3] != head_dim or spec.dtype != first.dtype:
            raise UnsupportedModelError(f"{source}: cache input '{name}' is {spec.dtype}{list(spec.shape)}, expected {first.dtype}[batch, {heads}, past, {head_dim}] like '{first.name}'")
    return CacheLayout(input_ids="input_ids", attention_mask="attention_mask", position_ids="position_ids", logits=logits,
                       past=past, present=present, kv_heads=int(heads), head_dim=int(head_dim), dtype=first.dtype)
