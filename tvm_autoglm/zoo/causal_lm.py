"""Decoder-only language models with a KV cache (``auto-glm zoo NAME --with-cache``).

GPT-NeoX (Pythia), GPT-2 and a Llama-family model (RoPE, RMSNorm, SwiGLU,
grouped-query attention, TinyLlama-shaped but smaller), built from their
transformers classes with seeded random weights and exported in the Hugging Face /
optimum layout that users' generation loops expect:

* inputs ``input_ids``, ``attention_mask`` (int64 [batch, total_sequence_length]),
  ``position_ids`` (int64 [batch, sequence_length]) and
  ``past_key_values.{i}.key`` / ``.value`` (float32 [batch, kv_heads, past_sequence_length, head_dim]);
* outputs ``logits`` [batch, sequence_length, vocab] and ``present.{i}.key`` / ``.value``
  [batch, kv_heads, total_sequence_length, head_dim];
* every batch / sequence / past dim symbolic, so one file serves prefill (past 0) and
  decode (sequence 1).

Weights: transformers' default initialisation (std 0.02) gives nearly flat logits, and
greedy decoding of such a model repeats one token forever, which would make a
"same tokens as onnxruntime" test worthless. ``initializer_range`` is raised
(``INIT_RANGE``) so the logits have a spread and 32 greedy tokens hold several distinct
ids (tested). The TorchScript exporter is used: it traces the transformers
``DynamicCache`` into plain Concat nodes in about a second; the dynamo exporter is far
slower on these graphs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AutoGLMError
from . import gpt_neox

#: Architectures this module exports (``zoo`` names).
ARCHS = ("gpt-neox", "gpt2", "llama")

#: Weight std per architecture (transformers' default is 0.02; see the module docstring).
INIT_RANGE = {"gpt-neox": 0.15, "gpt2": 0.15, "llama": 0.15}

SIZES = {
    "gpt-neox": {
        "tiny": gpt_neox.SIZES["tiny"],  # the same tiny decoder as the no-cache zoo model
        # pythia-160m
        "small": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=50304),
        "base": gpt_neox.SIZES["large"],  # pythia-410m
    },
    "gpt2": {
        "tiny": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000),
        # gpt2 (124M)
        "small": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257),
        # gpt2-medium (355M)
        "base": dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257),
    },
    "llama": {
        # TinyLlama-1.1B: hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632, vocab 32000.
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=176, vocab_size=1000),
        "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                      intermediate_size=1408, vocab_size=32000),
        "base": dict(hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4,
                     intermediate_size=2816, vocab_size=32000),
    },
}

DESCRIPTIONS = {
    "gpt-neox": "GPT-NeoX / Pythia causal LM with KV cache (tiny; small = pythia-160m; base = pythia-410m)",
    "gpt2": "GPT-2 causal LM with KV cache (tiny; small = gpt2; base = gpt2-medium)",
    "llama": "Llama-family causal LM with KV cache: RoPE, RMSNorm, SwiGLU, GQA (TinyLlama-shaped, smaller)",
}

INPUTS = ("input_ids", "attention_mask", "position_ids")


def _check(arch: str, size: str) -> None:
    if arch not in SIZES:
        raise AutoGLMError(f"zoo model {arch!r} has no --with-cache version", hint=f"choose one of: {', '.join(ARCHS)}")
    if size not in SIZES[arch]:
        raise AutoGLMError(f"zoo model {arch!r} --with-cache has no size {size!r}", hint=f"choose one of: {', '.join(SIZES[arch])}")


def config(arch: str, size: str):
    """The transformers config of ``arch`` at ``size`` (cache on, dropout off)."""
    _check(arch, size)
    from ._text import transformers

    tf = transformers()
    common = dict(use_cache=True, initializer_range=INIT_RANGE[arch], tie_word_embeddings=False)
    if arch == "gpt-neox":
        return tf.GPTNeoXConfig(**SIZES[arch][size], rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True,
                                hidden_dropout=0.0, attention_dropout=0.0, **common)
    if arch == "gpt2":
        vocab = SIZES[arch][size]["vocab_size"]  # GPT-2's default bos/eos 50256 is outside the tiny vocab
        return tf.GPT2Config(**SIZES[arch][size], n_positions=2048, bos_token_id=vocab - 1, eos_token_id=vocab - 1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    return tf.LlamaConfig(**SIZES[arch][size], max_position_embeddings=2048, rms_norm_eps=1e-5, hidden_act="silu", **common)


def cache_shape(arch: str, size: str) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of the cache tensors."""
    cfg = config(arch, size)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return cfg.num_hidden_layers, heads, cfg.hidden_size // cfg.num_attention_heads


def input_names(layers: int) -> list[str]:
    return list(INPUTS) + [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def output_names(layers: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def make(arch: str, size: str, seed: int = 0):
    """The eval-mode torch model with flat cache tensors in and out (the exported signature).

    ``forward(input_ids, attention_mask, position_ids, *past)`` returns
    ``(logits, *present)`` with past/present ordered layer by layer, key then value.
    """
    cfg = config(arch, size)
    from ._text import transformers
    from ._torch import randomize_1d, require_torch, seeded

    torch = require_torch()
    tf = transformers()
    cls = {"gpt-neox": tf.GPTNeoXForCausalLM, "gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM}[arch]
    with seeded(seed):
        inner = cls(cfg)
    randomize_1d(inner, seed)
    layers = cfg.num_hidden_layers

    class CausalLMWithCache(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = tf.DynamicCache(config=cfg)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True, return_dict=True)
            present = []
            for layer in cache.layers[:layers]:  # updated in place by the model
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return CausalLMWithCache(inner).eval()


def export(arch: str, size: str, output: str | Path, seed: int = 0) -> Path:
    """Export ``make(arch, size, seed)`` to ``output`` with symbolic batch / sequence / past dims."""
    import os
    import tempfile
    import warnings

    import numpy as np

    from ._torch import require_torch

    torch = require_torch()
    model = make(arch, size, seed)
    layers, heads, head_dim = cache_shape(arch, size)
    # Trace at batch 2, sequence 3, past 5: sizes of 1 would be specialised by the tracer.
    batch, seq, past_len = 2, 3, 5
    rng = np.random.default_rng(seed)
    vocab = config(arch, size).vocab_size
    ids = torch.from_numpy(rng.integers(0, vocab, size=(batch, seq), dtype=np.int64))
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq, dtype=torch.int64).expand(batch, seq).contiguous()
    past = [torch.from_numpy(rng.standard_normal((batch, heads, past_len, head_dim), dtype=np.float32)) for _ in range(2 * layers)]
    names, outs = input_names(layers), output_names(layers)
    axes = {"input_ids": {0: "batch", 1: "sequence_length"}, "attention_mask": {0: "batch", 1: "total_sequence_length"},
            "position_ids": {0: "batch", 1: "sequence_length"}, "logits": {0: "batch", 1: "sequence_length"}}
    axes.update({n: {0: "batch", 2: "past_sequence_length"} for n in names[3:]})
    axes.update({n: {0: "batch", 2: "total_sequence_length"} for n in outs[1:]})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ids, mask, pos, *past), tmp, input_names=names, output_names=outs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output
