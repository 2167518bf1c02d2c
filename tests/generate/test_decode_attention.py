"""Decode attention over the valid cache prefix (``passes/decode_attention``): structure and parity.

The generators of ``conftest`` (tiny gpt-neox with partial rotary, gpt2, llama with 4 heads over
2 kv heads) plus two odd shapes built here: head dim 40, gpt-neox with 2 heads (rotary on 10 of
40 dims) and llama with 3 heads over 1 kv head, compiled for an odd max context.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm_ffi
from tvm import relax, tirx
from tvm.ir.expr import TensorLoad

from lm_cases import ARCHS, MAX_CONTEXT

# Same tolerances as test_generate_compiled (float32, different op order; measured ~1e-5).
LOGITS_ATOL = 2e-4
LOGITS_RTOL = 1e-4

ODD_SIZES = {
    "gpt-neox": dict(hidden_size=80, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96, vocab_size=500),
    "llama": dict(hidden_size=120, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1, intermediate_size=96,
                  vocab_size=500),
}
ODD_MAX_CONTEXT = 75
ODD_CHUNK = 8


def _kernel_name(mod, gv) -> str:
    func = mod[gv]
    attrs = func.attrs if isinstance(func, tirx.PrimFunc) else None
    return str(attrs.get("autoglm.kernel", gv.name_hint)) if attrs is not None else gv.name_hint


def _kernel_calls(mod, func_name="main"):
    """(kernel name, [tensor args and result that are not constants]) of every call_tir in ``func_name``."""
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") in ("relax.call_tir", "relax.call_tir_inplace"):
            gv, args = expr.args[0], expr.args[1]
            tensors = [a.ty for a in args.fields if isinstance(a, relax.Var)] + [expr.ty]
            calls.append((_kernel_name(mod, gv), tensors))

    relax.analysis.post_order_visit(mod[func_name].body, visit)
    return calls


def _numel(ty) -> int:
    try:
        return int(np.prod([int(d) for d in ty.shape.values]))
    except (AttributeError, TypeError):
        return 0


@pytest.mark.parametrize("arch", ARCHS)
def test_no_decode_kernel_copies_or_transposes_a_cache(arch, generator):
    """Structural: only the in-place writes and the decode attention kernel touch a cache-sized tensor.

    A transposed K (``permute_dims`` of the cache) or a grouped-query repeat of K/V is a kernel whose
    output has at least a cache's elements; the old graph had one per layer (two more with GQA)."""
    model = generator(arch)
    mod = model.build.mod
    cache = next(s for s in model.inputs if s["name"] == "past_key_values.0.key")["shape"]
    cache_numel = int(np.prod(cache))
    layers = sum(1 for s in model.inputs if s["name"].startswith("past_key_values") and s["name"].endswith(".key"))
    touching = [name for name, tensors in _kernel_calls(mod) if any(_numel(t) >= cache_numel for t in tensors)]
    assert sorted(touching) == sorted(["write_kv_cache"] * (2 * layers) + ["decode_attention"] * layers), touching
    # and the attention kernel's outputs are one row per head, not cache-sized
    outs = [tensors[-1] for name, tensors in _kernel_calls(mod) if name == "decode_attention"]
    assert all(_numel(t) < cache_numel for t in outs)


def _loops_and_bindings(func):
    loops, binds = [], {}

    def visit_for(node):
        loops.append(node)

    def visit_bind(node):
        binds[node.var] = node.value

    tvm_ffi.structural_walk(func.body, (tirx.For, visit_for), order="post")
    tvm_ffi.structural_walk(func.body, (tirx.Bind, visit_bind), order="post")
    return loops, binds


def _reads_position(expr, binds, position_buffer) -> bool:
    """Whether ``expr`` depends on the cache_position buffer (directly or through bound vars), and on nothing else unbound."""
    found = []

    def visit_load(node):
        if node.source.same_as(position_buffer):
            found.append(node)

    tvm_ffi.structural_walk(expr, (TensorLoad, visit_load), order="post")
    if found:
        return True
    return any(var in binds and _reads_position(binds[var], binds, position_buffer) for var in tirx.analysis.undefined_vars(expr))


def test_decode_attention_loops_to_the_symbolic_valid_length(generator):
    """Structural: every key loop of the decode kernel runs to n = cache_position + 1, none to max_context."""
    mod = generator("gpt-neox").build.mod
    kernels = [mod[gv] for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc) and f.attrs is not None
               and f.attrs.get("autoglm.kernel") == "decode_attention"]
    assert len(kernels) == 1  # both layers share one kernel
    func = kernels[0]
    position = next(p for p in func.params if p.name == "cache_position")
    loops, binds = _loops_and_bindings(func)
    symbolic = [loop for loop in loops if not isinstance(loop.extent, tirx.IntImm)]
    # scores, padding, max, exp/sum, normalise, P.V
    assert len(symbolic) >= 5, [str(loop.extent) for loop in loops]
    for loop in symbolic:
        assert _reads_position(loop.extent, binds, position), str(loop.extent)
    constant = [int(loop.extent) for loop in loops if isinstance(loop.extent, tirx.IntImm)]
    assert max(constant) < MAX_CONTEXT, constant  # heads, head dim, lanes: nothing walks all the slots


def _hand_decode_inputs(model, position, mask_ones_upto, rng):
    inputs = {"input_ids": np.array([[5]]), "position_ids": np.array([[position]]), "cache_position": np.array([position])}
    mask = np.zeros((1, MAX_CONTEXT), np.int64)
    mask[0, :mask_ones_upto] = 1
    inputs["attention_mask"] = mask
    for s in model.inputs:
        if s["name"].startswith("past_key_values"):
            inputs[s["name"]] = rng.standard_normal(s["shape"]).astype(np.float32)
    return inputs


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_slots_after_cache_position_do_not_take_part(arch, generator):
    """main attends over slots 0..cache_position: whatever lies after it (stale keys, a mask left at 1) is ignored,
    as in onnxruntime's cache loop where a past of cache_position tokens has no further slots."""
    model = generator(arch)
    position = 20
    base = _hand_decode_inputs(model, position, position + 1, np.random.default_rng(0))
    stale = {k: v.copy() for k, v in base.items()}
    stale["attention_mask"][:] = 1  # slots after the position unmasked
    for name, value in stale.items():
        if name.startswith("past_key_values"):
            value[:, :, position + 1:] = 1e3  # and holding large keys/values
    want = model.run(base)["logits"]
    got = model.run(stale)["logits"]
    np.testing.assert_array_equal(got, want)


def test_a_mask_hiding_earlier_slots_is_respected(generator, lm_onnx):
    """The model's own attention_mask within the valid prefix is applied exactly as onnxruntime applies it."""
    from helpers import ort_run

    model = generator("gpt2")
    position = 11
    rng = np.random.default_rng(1)
    inputs = _hand_decode_inputs(model, position, position + 1, rng)
    inputs["attention_mask"][0, [2, 5, 6]] = 0
    got = model.run(inputs)["logits"]
    feeds = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"],
             "attention_mask": inputs["attention_mask"][:, : position + 1]}
    # onnxruntime gets a past of `position` tokens; our caches' rows from `position` on are random
    # (the step overwrites row `position`, and later rows are not part of the prefix)
    feeds.update({name: value[:, :, :position] for name, value in inputs.items() if name.startswith("past_key_values")})
    want = ort_run(lm_onnx("gpt2"), feeds)["logits"]
    np.testing.assert_allclose(got, want, rtol=LOGITS_RTOL, atol=LOGITS_ATOL)
    hidden = dict(inputs)
    hidden["attention_mask"] = inputs["attention_mask"].copy()
    hidden["attention_mask"][0, [2, 5, 6]] = 1
    assert not np.allclose(model.run(hidden)["logits"], got, atol=1e-3)  # the hidden slots did matter


@pytest.fixture(scope="module")
def odd_lm(workdir):
    """arch -> (onnx path, generator) with head dim 40 (see ODD_SIZES), built on first use."""
    import tvm_autoglm
    from tvm_autoglm.zoo import causal_lm

    built = {}

    def get(arch):
        if arch not in built:
            with pytest.MonkeyPatch.context() as mp:
                mp.setitem(causal_lm.SIZES[arch], "odd", ODD_SIZES[arch])
                path = causal_lm.export(arch, "odd", workdir / f"{arch}-odd-cache.onnx", seed=3)
            built[arch] = (path, tvm_autoglm.compile(path, generate=True, max_context=ODD_MAX_CONTEXT, prefill_chunk=ODD_CHUNK))
        return built[arch]

    return get


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_head_dim_40_greedy_tokens_and_logits_match_onnxruntime_up_to_max_context(arch, odd_lm):
    from tvm_autoglm.generate.reference import OrtStepper

    path, model = odd_lm(arch)
    prompt = [3, 17, 250, 1, 99, 42, 7, 400, 11]  # one prefill chunk, then one decode step of the prompt
    new = ODD_MAX_CONTEXT - len(prompt) + 1  # the last logits come from position max_context - 1
    want_ids, want_logits = OrtStepper(path).generate(prompt, max_new_tokens=new, output_logits=True)
    got_ids, got_logits = model.generate(prompt, max_new_tokens=new, output_logits=True)
    assert got_ids.tolist() == want_ids.tolist()
    assert len(got_ids) == new >= 64
    for row in (0, 1, new // 2, new - 2, new - 1):  # first token ... the last slot
        np.testing.assert_allclose(got_logits[row], want_logits[row], rtol=LOGITS_RTOL, atol=LOGITS_ATOL, err_msg=f"token {row}")
    kernels = [name for name, _ in _kernel_calls(model.build.mod)]
    assert kernels.count("decode_attention") == ODD_SIZES[arch]["num_hidden_layers"]
