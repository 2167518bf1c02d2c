"""BERT encoder (transformers ``BertModel``) with seeded random weights.

Inputs are ``input_ids`` and ``attention_mask`` (int64, [batch, seq]).
``token_type_ids`` is deliberately not an input: single-segment inference uses
all-zero segment ids, which BertModel takes from its zero buffer, so the
exporters fold the segment embedding into a constant row as they would for a
real single-sentence export. Outputs: ``last_hidden_state`` [batch, seq, hidden]
and ``pooler_output`` [batch, hidden] (dense + tanh on the first token).
"""

from __future__ import annotations

from . import _text

DESCRIPTION = "BERT encoder (transformers BertModel): embeddings, post-LN layers, pooler"

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=1000),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=30522),
}

INPUTS = _text.INPUTS
OUTPUTS = ("last_hidden_state", "pooler_output")


def input_shapes(size: str, seq: int, batch: int) -> dict[str, tuple[list[int], str]]:
    return _text.input_shapes(seq, batch)


def example_inputs(size: str, seq: int, batch: int, rng) -> dict:
    """The mask pads the last quarter of each row so masking matters; rows differ in padding when batch > 1."""
    return _text.token_inputs(SIZES[size]["vocab_size"], seq, batch, rng, lambda b: max(1, seq - seq // 4 - b))


def make(size: str, seq: int, batch: int, seed: int):
    """The torch module to export; its forward takes the inputs positionally, in INPUTS order."""
    tf = _text.transformers()
    config = tf.BertConfig(
        **SIZES[size],
        max_position_embeddings=max(512, seq),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return _text.build(lambda: tf.BertModel(config, add_pooling_layer=True), seed, OUTPUTS)
