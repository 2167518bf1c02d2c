"""compile --generate --quantize wint8: weight-only int8 decode and prefill of the tiny zoo decoders.

Against fp32 onnxruntime, teacher-forced along onnxruntime's 32 greedy tokens (both models
see the same history; free-running, one near-tie flip makes every later logit incomparable):
every step's logit cosine must be >= 0.99 (the default budget's promise; the tiny models
measure ~0.9998), and wherever fp32's top-1 leads its runner-up by more than twice that
step's largest logit error, the int8 build must pick the same token (near-ties may flip: the
tiny gpt-neox has a 0.009 margin at one step against a 0.05 error), the pick must be one of
fp32's near-best tokens at every step, and at most 3 of 32 may differ. The manifest must say,
per layer, that every matmul weight went int8 in both functions.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from helpers import assert_clean_error, cli
from lm_cases import MAX_CONTEXT, PREFILL_CHUNK

from tvm_autoglm.errors import AutoGLMError

PROMPT = [5, 17, 99, 3, 250, 42, 7]
STEPS = 32
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def wint8_generator(lm_onnx):
    import tvm_autoglm

    built = {}

    def get(arch):
        if arch not in built:
            built[arch] = tvm_autoglm.compile(lm_onnx(arch), generate=True, max_context=MAX_CONTEXT,
                                              prefill_chunk=PREFILL_CHUNK, quantize="wint8")
        return built[arch]

    return get


def _teacher_forced_logits(stepper, tokens) -> np.ndarray:
    """Logits [len(tokens), vocab]: the prompt's last position, then each of ``tokens[:-1]`` fed in turn."""
    stepper.reset()
    rows = [stepper.step(np.array(PROMPT), 0)]
    for position, token in enumerate(tokens[:-1], start=len(PROMPT)):
        rows.append(stepper.step(np.array([token]), position))
    return np.asarray(rows, np.float64)


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_wint8_generator_logits_and_greedy_tokens(arch, wint8_generator, reference):
    from tvm_autoglm.generate.runner import CompiledStepper

    quantized = wint8_generator(arch)
    tokens = [int(t) for t in reference(arch).generate(PROMPT, max_new_tokens=STEPS)]
    ref = _teacher_forced_logits(reference(arch), tokens)
    got = _teacher_forced_logits(CompiledStepper(quantized._session), tokens)
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() >= MIN_COSINE, cosine
    error = np.abs(got - ref).max(axis=1)
    picked = got.argmax(1)
    # every step: the int8 pick is one of fp32's near-best tokens (within twice that step's logit error of the best)
    assert np.all(ref[np.arange(STEPS), picked] >= ref.max(1) - 2 * error)
    # where fp32's lead is larger than that, it must be fp32's token; and near-ties flip rarely
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * error
    assert np.array_equal(picked[clear], np.array(tokens)[clear])
    assert (picked == np.array(tokens)).sum() >= STEPS - 3, (picked, tokens)
    q = quantized.manifest["quantization"]
    assert q["mode"] == "wint8" and q["counts"]["fp32"] == 0 and q["counts"]["wint8"] == len(q["layers"]) > 0
    assert q["measured_error"] <= q["budget"] == 0.01
    # decode and prefill: the same weights, the same precision (llama's q/k/v and gate/up are merged into one
    # weight each by merge_parallel_matmul, so it has fewer sites than ONNX layers)
    sites = q["sites_per_function"]
    assert set(sites) == {"main", "prefill"} and sites["main"] == sites["prefill"] > 0
    assert sites["main"] == len(q["layers"]) - (6 if arch == "llama" else 0)  # 2 layers x (q,k,v -> 1 and gate,up -> 1)
    assert q["weight_bytes"] * 4 == q["weight_bytes_fp32"]
    kernels = [k for k in quantized.kernels if "wint8_matmul" in k]
    assert any(k.startswith("wint8_matmul_1x") for k in kernels)  # decode: one row
    assert any(k.startswith(f"wint8_matmul_{PREFILL_CHUNK}x") for k in kernels)  # prefill: the chunk's rows


def test_tight_budget_keeps_layers_fp32(lm_onnx):
    """A budget below what any single int8 layer costs keeps every layer fp32 -> refused (nothing to quantize)."""
    import tvm_autoglm

    with pytest.raises(AutoGLMError, match="no matmul .* could be quantized within the budget"):
        tvm_autoglm.compile(lm_onnx("gpt-neox"), generate=True, max_context=MAX_CONTEXT, prefill_chunk=PREFILL_CHUNK,
                            quantize="wint8", accuracy_budget=1e-12)


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_generate_refuses_other_precisions(mode, lm_onnx):
    import tvm_autoglm

    with pytest.raises(AutoGLMError, match=f"--generate takes --quantize none or wint8 .*got {mode}"):
        tvm_autoglm.compile(lm_onnx("gpt-neox"), generate=True, max_context=MAX_CONTEXT, quantize=mode)


def test_budget_without_wint8_is_refused(lm_onnx):
    import tvm_autoglm

    with pytest.raises(AutoGLMError, match="--accuracy-budget applies to --quantize wint8"):
        tvm_autoglm.compile(lm_onnx("gpt-neox"), generate=True, max_context=MAX_CONTEXT, accuracy_budget=0.05)


def test_cli_compile_generate_wint8(workdir, lm_onnx, reference):
    so = workdir / "wint8-neox.so"
    out = cli("compile", "--model", lm_onnx("gpt-neox"), "--generate", "--quantize", "wint8", "--max-context", "48",
              "--prefill-chunk", "8", "--output", so, check=True)
    assert "wint8: 9 layers int8, 0 fp32" in out.stdout
    assert re.search(r"wint8 +64x1000  /model/lm_head/MatMul", out.stdout)
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["quantization"]["mode"] == "wint8" and manifest["generator"]["max_context"] == 48
    ids = ",".join(map(str, PROMPT))
    got = cli("generate", "--binary", so, "--prompt-ids", ids, "--max-new-tokens", "16", check=True)
    assert got.stdout.strip() == ",".join(map(str, reference("gpt-neox").generate(PROMPT, max_new_tokens=16)))
    refused = cli("compile", "--model", lm_onnx("gpt-neox"), "--generate", "--quantize", "int8", "--output", workdir / "no.so")
    assert refused.returncode == 2
    assert_clean_error(refused, "--generate takes --quantize none or wint8")


@pytest.mark.parametrize("arch", ["gpt-neox", "gpt2"])
def test_budget_reference_is_the_prompt_and_fp32s_own_greedy_continuation(arch, lm_onnx, reference):
    """The wint8 budget is measured on decode positions: each of the probe's sequences continues its prompt with exactly the tokens
    onnxruntime's own cache loop (an independent loop) generates, capped at the generator's max context."""
    import onnx

    from tvm_autoglm.generate.layout import detect
    from tvm_autoglm.quantize import weight_only_budget, wint8_build

    proto = onnx.load(str(lm_onnx(arch)))
    layout = detect(proto)
    probe = weight_only_budget.OrtProbe(proto, weight_only_budget.onnx_layers(proto))
    _, make_feeds, outputs = wint8_build.decoder_reference(proto, layout, max_context=30, tokens=8, new_tokens=40, sequences=2)
    feeds = make_feeds(probe.run)
    batch = feeds[layout.input_ids]
    assert batch.shape == (2, 30) and outputs == [layout.logits]  # 8 prompt + 22: the max context caps the 40 asked
    assert not np.array_equal(batch[0, :8], batch[1, :8])
    for ids in batch.tolist():  # each row continued alone by the reference loop: the batch changed nothing
        expected = [int(t) for t in reference(arch).generate(ids[:8], max_new_tokens=22)]
        assert ids[8:] == expected
        assert len(set(expected)) > 3  # a constant stream would not exercise the cache
    assert all(np.shape(feeds[name])[:3] == (2, layout.kv_heads, 0) for name in layout.past_names())  # empty cache
