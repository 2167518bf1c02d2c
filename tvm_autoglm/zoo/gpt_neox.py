"""GPT-NeoX decoder stack (transformers ``GPTNeoXModel``, the Pythia family) with seeded random weights.

Causal, no KV cache (``use_cache=False``), parallel residual, partial rotary
embeddings (rotary_pct 0.25). Inputs ``input_ids`` and ``attention_mask``
(int64, [batch, seq]): the mask is an input because without it transformers
probes ``position_ids`` for packed sequences with ``torch.diff``, which the
TorchScript exporter cannot translate. Output ``last_hidden_state``
[batch, seq, hidden] (the LM head is a plain MatMul with the vocab and is left out).
"""

from __future__ import annotations

from . import _text

DESCRIPTION = "GPT-NeoX / Pythia causal decoder (transformers GPTNeoXModel), rotary, no KV cache"

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=1000),
    # pythia-70m
    "base": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048, vocab_size=50304),
    # pythia-410m
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=50304),
}

INPUTS = _text.INPUTS
OUTPUTS = ("last_hidden_state",)


def input_shapes(size: str, seq: int, batch: int) -> dict[str, tuple[list[int], str]]:
    return _text.input_shapes(seq, batch)


def example_inputs(size: str, seq: int, batch: int, rng) -> dict:
    """Right padding on the last eighth (causal rows never become empty)."""
    return _text.token_inputs(SIZES[size]["vocab_size"], seq, batch, rng, lambda b: max(1, seq - seq // 8))


def make(size: str, seq: int, batch: int, seed: int):
    tf = _text.transformers()
    config = tf.GPTNeoXConfig(
        **SIZES[size],
        rotary_pct=0.25,
        max_position_embeddings=max(2048, seq),
        use_cache=False,
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return _text.build(lambda: tf.GPTNeoXModel(config), seed, OUTPUTS, use_cache=False)
