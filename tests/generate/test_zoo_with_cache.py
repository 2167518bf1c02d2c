"""Zoo causal LMs with a KV cache: the exported graph is the torch model, at any batch / past length, and greedy
decoding of it is not degenerate (else token-equality tests would prove nothing)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lm_cases import ARCHS

# Float32 model vs its own export: the same ops in another order.
ATOL = 1e-4
RTOL = 1e-4


def _torch_outputs(arch, feeds):
    import torch

    from tvm_autoglm.zoo import causal_lm

    model = causal_lm.make(arch, "tiny", seed=0)
    names = causal_lm.input_names(causal_lm.cache_shape(arch, "tiny")[0])
    with torch.no_grad():
        out = model(*(torch.from_numpy(feeds[n]) for n in names))
    return [o.numpy() for o in out]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_has_cache_layout_and_symbolic_dims(arch, lm_onnx):
    from tvm_autoglm.generate.layout import detect

    proto = onnx.load(str(lm_onnx(arch)))
    layout = detect(proto)
    assert layout.layers == 2 and layout.position_ids == "position_ids"
    past = {i.name: i for i in proto.graph.input}[layout.past[0][0]]
    dims = past.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and not dims[1].dim_param and not dims[3].dim_param
    assert layout.kv_heads == (2 if arch == "llama" else 4)  # llama tiny: grouped-query attention, 4 heads over 2 kv heads


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch,seq,past", [(1, 1, 9), (3, 5, 0), (2, 4, 7)])
def test_export_matches_torch_at_other_shapes(arch, batch, seq, past, lm_onnx):
    from helpers import ort_run
    from tvm_autoglm.generate.layout import detect

    path = lm_onnx(arch)
    layout = detect(onnx.load(str(path)))
    rng = np.random.default_rng(batch * 100 + seq * 10 + past)
    feeds = {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
             "attention_mask": np.ones((batch, past + seq), np.int64),
             "position_ids": np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))}
    feeds["attention_mask"][0, : min(past, 2)] = 0  # a left-padded row
    for name in layout.past_names():
        feeds[name] = rng.standard_normal((batch, layout.kv_heads, past, layout.head_dim)).astype(np.float32)
    got = list(ort_run(path, feeds).values())
    want = _torch_outputs(arch, feeds)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_are_not_degenerate(arch, reference):
    tokens = reference(arch).generate([11, 22, 33, 44, 55], max_new_tokens=32)
    assert len(tokens) == 32
    assert len(set(tokens.tolist())) >= 6, tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_loop_matches_torch_greedy(arch, reference):
    """onnxruntime's cache loop vs the torch model recomputed on the whole sequence each step (no cache at all)."""
    import torch

    from tvm_autoglm.zoo import causal_lm

    model = causal_lm.make(arch, "tiny", seed=0)
    layers, heads, head_dim = causal_lm.cache_shape(arch, "tiny")
    seq = [3, 1, 4, 1, 5]
    for _ in range(16):
        n = len(seq)
        empty = [torch.zeros(1, heads, 0, head_dim) for _ in range(2 * layers)]
        with torch.no_grad():
            logits = model(torch.tensor([seq]), torch.ones(1, n, dtype=torch.int64), torch.arange(n).reshape(1, n), *empty)[0]
        seq.append(int(logits[0, -1].argmax()))
    assert reference(arch).generate([3, 1, 4, 1, 5], max_new_tokens=16).tolist() == seq[5:]


def test_unknown_arch_and_size_are_refused():
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.zoo import build_with_cache

    with pytest.raises(AutoGLMError, match="has no --with-cache version"):
        build_with_cache("resnet50", "tiny")
    with pytest.raises(AutoGLMError, match="has no size 'huge'"):
        build_with_cache("gpt2", "huge")
