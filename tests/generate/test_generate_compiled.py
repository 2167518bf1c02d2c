"""Compiled generators (``compile(..., generate=True)``) against onnxruntime running the same ONNX with its own cache loop."""

from __future__ import annotations

import numpy as np
import pytest

from lm_cases import ARCHS, MAX_CONTEXT, PREFILL_CHUNK

PROMPT = [7, 3, 99, 250, 1, 42, 640]
# Logits of our build vs onnxruntime after up to 71 cached tokens: float32, different op order and
# fusion; measured max difference ~1e-5 on these models.
LOGITS_ATOL = 2e-4
LOGITS_RTOL = 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_and_logits_match_onnxruntime(arch, generator, reference):
    want_ids, want_logits = reference(arch).generate(PROMPT, max_new_tokens=64, output_logits=True)
    got_ids, got_logits = generator(arch).generate(PROMPT, max_new_tokens=64, output_logits=True)
    assert got_ids.tolist() == want_ids.tolist()
    assert got_logits.shape == want_logits.shape == (64, 1000)
    np.testing.assert_allclose(got_logits, want_logits, rtol=LOGITS_RTOL, atol=LOGITS_ATOL)


def test_prompt_longer_than_prefill_chunk_continues_token_by_token(generator, reference):
    prompt = list(range(5, 5 + PREFILL_CHUNK + 9))  # one prefill call, then 9 decode steps of the prompt
    want = reference("llama").generate(prompt, max_new_tokens=20, output_logits=True)
    got = generator("llama").generate(prompt, max_new_tokens=20, output_logits=True)
    assert got[0].tolist() == want[0].tolist()
    np.testing.assert_allclose(got[1], want[1], rtol=LOGITS_RTOL, atol=LOGITS_ATOL)


def test_generation_fills_the_whole_context_then_stops(generator, reference):
    n = MAX_CONTEXT - len(PROMPT)
    got = generator("gpt2").generate(PROMPT, max_new_tokens=n + 10)
    assert len(got) == n + 1  # the last token needs no step: it is chosen from the logits at position max_context - 1
    assert got.tolist() == reference("gpt2").generate(PROMPT, max_new_tokens=n + 1).tolist()


def test_repeated_calls_start_from_an_empty_cache(generator):
    model = generator("gpt-neox")
    first = model.generate([1, 2, 3], max_new_tokens=12)
    model.generate(list(range(30, 60)), max_new_tokens=20)  # leaves other keys/values in the cache
    assert model.generate([1, 2, 3], max_new_tokens=12).tolist() == first.tolist()


def test_sampling_is_reproducible_with_a_seed_and_matches_onnxruntime(generator, reference):
    kwargs = dict(max_new_tokens=24, do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    a = generator("gpt2").generate(PROMPT, seed=5, **kwargs)
    b = generator("gpt2").generate(PROMPT, seed=5, **kwargs)
    c = generator("gpt2").generate(PROMPT, seed=6, **kwargs)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert a.tolist() == reference("gpt2").generate(PROMPT, seed=5, **kwargs).tolist()


def test_streaming_yields_the_same_tokens(generator):
    model = generator("gpt2")
    stream = model.generate(PROMPT, max_new_tokens=10, stream=True)
    assert not isinstance(stream, np.ndarray)
    assert [int(t) for t in stream] == model.generate(PROMPT, max_new_tokens=10).tolist()


def test_eos_stops_generation(generator):
    model = generator("llama")
    full = model.generate(PROMPT, max_new_tokens=20).tolist()
    eos = full[5]
    stop = full.index(eos)
    assert model.generate(PROMPT, max_new_tokens=20, eos_token_id=eos).tolist() == full[: stop + 1]


def test_decode_updates_the_cache_in_place(generator):
    """Structural: no concat over a cache input is left in decode or prefill; each writes every cache in place."""
    from tvm import relax

    def calls(func, op_name):
        found = []
        relax.analysis.post_order_visit(func.body, lambda e: found.append(e) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == op_name else None)
        return found

    mod = generator("gpt-neox").build.mod  # after fusion
    for name in ("main", "prefill"):
        inplace = calls(mod[name], "relax.call_tir_inplace")
        assert len(inplace) == 4, (name, len(inplace))  # 2 layers x (key, value)
        assert all(list(c.ty.shape.values) == [1, 4, MAX_CONTEXT, 16] for c in inplace)
    cache_params = [p for p in mod["main"].params if p.name.startswith("past_key_values")]
    assert [list(p.ty.shape.values) for p in cache_params] == [[1, 4, MAX_CONTEXT, 16]] * 4


@pytest.mark.parametrize("bad,message", [
    (list(range(MAX_CONTEXT + 1)), "max context is 80"),
    ([[1, 2], [3, 4]], "one prompt"),
    ([], "at least one token"),
    ([5, 1000], "in [0, 1000)"),
    ([0.5, 2.0], "must be integers"),
])
def test_bad_prompts_are_refused_in_one_line(bad, message, generator):
    from tvm_autoglm.errors import AutoGLMError

    with pytest.raises(AutoGLMError) as info:
        generator("gpt2").generate(bad, max_new_tokens=3)
    assert message in info.value.one_line() and "\n" not in info.value.one_line()


def test_running_decode_by_hand_range_checks_cache_position(generator):
    """main writes at cache_position: Session.run refuses a slot outside the cache instead of writing out of bounds."""
    from tvm_autoglm.errors import InputError

    model = generator("gpt2")
    inputs = {"input_ids": np.array([[1]]), "attention_mask": np.ones((1, MAX_CONTEXT), np.int64), "position_ids": np.array([[0]])}
    inputs.update({s["name"]: np.zeros(s["shape"], np.float32) for s in model.inputs if s["name"].startswith("past_key_values")})
    ok = model.run({**inputs, "cache_position": np.array([MAX_CONTEXT - 1])})
    assert ok["present.0.key"].shape == (1, 4, MAX_CONTEXT, 16)
    assert np.abs(ok["present.0.key"][0, :, MAX_CONTEXT - 1]).sum() > 0  # the new row landed in the last slot
    assert np.abs(ok["present.0.key"][0, :, : MAX_CONTEXT - 1]).sum() == 0  # and nowhere else
    with pytest.raises(InputError, match=f"input 'cache_position' has value {MAX_CONTEXT}"):
        model.run({**inputs, "cache_position": np.array([MAX_CONTEXT])})
