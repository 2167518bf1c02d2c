"""--quantize bf16 on AVX512-BF16 targets: constant weights packed for vdpbf16ps, fp32 accumulation.

On every host: the layout, which matmuls the rewrite packs, and whole bf16 Relax modules through
the packed layout with the portable dot product against the unpacked bf16 build and float64
numpy. Compile-only on every host: the pinned BF16 targets' builds (MLP, tiny bert) use vdpbf16ps
on zmm and targets without the feature pack nothing. Parity with onnxruntime where the host has it.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from helpers import ort_run, relax_calls
from quantize_models import deep_mlp, one_minus_cos
from tvm_autoglm.pipeline import compile_model
from tvm_autoglm.quantize import kernel_choice, pack_bf16
from tvm_autoglm.schedule_rules import DEFAULT_RULES, apply_default_schedules
from tvm_autoglm.schedule_rules.bf16_matmul import BF16MatmulPortable
from tvm_autoglm.targets import cpu_has_feature, load_target

from zoo_fixtures import zoo_build, zoo_dir  # noqa: F401  (fixtures)

HOST_HAS_BF16 = cpu_has_feature(load_target("cpu"), "avx512bf16")


def test_layout_is_pairs_of_rows_in_16_column_blocks():
    w = np.arange(6 * 32, dtype=np.float32).reshape(6, 32)
    p = pack_bf16.pack_weight(w)
    assert p.shape == (2, 3, 16, 2)
    for j, g, lane, q in [(0, 0, 0, 0), (1, 2, 15, 1), (0, 1, 3, 1), (1, 0, 9, 0)]:
        assert p[j, g, lane, q] == w[2 * g + q, 16 * j + lane]
    np.testing.assert_array_equal(pack_bf16.unpack_weight(p), w)


def test_packable_and_its_refusals():
    assert pack_bf16.packable(6, 16) and pack_bf16.packable(768, 3072)
    assert not pack_bf16.packable(7, 16)  # odd K: a pair would straddle the end
    assert not pack_bf16.packable(2, 16)  # one pair: the reduction loop would vanish
    assert not pack_bf16.packable(64, 24)  # N not whole zmm registers
    with pytest.raises(ValueError, match="does not take the bf16 layout"):
        pack_bf16.pack_weight(np.zeros((7, 16), np.float32))


def _bf16_module(k: int, widths: list[int], rows: int = 5, seed: int = 0, transpose_first: bool = False):
    """What ToMixedPrecision + bf16 makes of a matmul chain: astype(x, bf16) @ astype(W, bf16) -> f32, tanh in between."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, k), "float32"))
    weights = []
    with bb.function("main", [x]):
        with bb.dataflow():
            h, width = x, k
            for i, n in enumerate(widths):
                w = (rng.standard_normal((width, n)) / np.sqrt(width)).astype("float32")
                weights.append(w)
                if transpose_first and i == 0:
                    wc = bb.emit(relax.op.permute_dims(relax.const(np.ascontiguousarray(w.T)), [1, 0]))
                else:
                    wc = relax.const(w)
                hb = bb.emit(relax.op.astype(h, "bfloat16"))
                wb = bb.emit(relax.op.astype(wc, "bfloat16"))
                h = bb.emit(relax.op.matmul(hb, wb, out_dtype="float32"))
                if i < len(widths) - 1:
                    h = bb.emit(relax.op.tanh(h))
                width = n
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get(), weights


def _packed_calls(mod) -> int:
    return mod.script().count("bf16_packed_matmul")


def test_rewrite_packs_only_packable_constant_weights():
    # 48 and 32 wide: packed; 8 wide (the head) and K = 7 (odd): left to the generic bf16 matmul
    mod, _ = _bf16_module(30, [48, 32, 8], transpose_first=True)
    packed_mod, count = pack_bf16.pack_bf16_matmuls(mod)
    assert count == 2 and _packed_calls(packed_mod) >= 2
    odd, _ = _bf16_module(7, [16])
    assert pack_bf16.pack_bf16_matmuls(odd)[1] == 0
    # an activation x activation matmul (attention's) is no site
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((4, 32), "bfloat16"))
    b = relax.Var("b", relax.TensorType((32, 16), "bfloat16"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b, out_dtype="float32"))
        bb.emit_func_output(out)
    assert pack_bf16.pack_bf16_matmuls(bb.get())[1] == 0


def _run(mod, target, rules, x):
    scheduled = apply_default_schedules(relax.get_pipeline("zero")(mod), target, rules)
    ex = tvm.compile(scheduled, target)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy(), scheduled


@pytest.mark.parametrize("rows,k,widths", [(5, 30, [48, 32]), (1, 6, [16]), (17, 64, [64, 16])])
def test_packed_module_matches_the_unpacked_bf16_build_on_any_host(rows, k, widths):
    target = load_target("cpu-x86-avx2").tvm_target()
    mod, weights = _bf16_module(k, widths, rows)
    x = np.random.default_rng(rows + k).standard_normal((rows, k)).astype("float32")
    packed_mod, count = pack_bf16.pack_bf16_matmuls(mod)
    assert count == len(widths)
    got, scheduled = _run(packed_mod, target, (BF16MatmulPortable(),) + DEFAULT_RULES, x)
    assert sum("bf16_packed_matmul" in g.name_hint for g, _ in scheduled.functions_items()) == len(widths)
    want, _ = _run(mod, target, DEFAULT_RULES, x)
    # same bf16 operands, fp32 accumulation in another order: |diff| within fp32 rounding of the sums
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = x.astype(np.float64)
    for i, w in enumerate(weights):
        ref = ref @ w.astype(np.float64)
        if i < len(weights) - 1:
            ref = np.tanh(ref)
    np.testing.assert_allclose(got, ref, rtol=0, atol=0.05)  # bf16 operands: 8-bit mantissas, ~2^-9 relative each


def _assert_bf16_build(done, caplog, min_kernels: int) -> None:
    kernels = [g.name_hint for g, _ in done.scheduled.mod.functions_items() if "bf16_packed_matmul" in g.name_hint]
    assert len(kernels) >= min_kernels, kernels
    for name in kernels:
        assert f"{name} scheduled by BF16MatmulAVX512" in caplog.text
    asm = done.executable.mod.imports[0].inspect_source("asm")
    dots = re.findall(r"\bvdpbf16ps\s+[^\n]*", asm)
    assert len(dots) >= len(kernels) and all("%zmm" in d for d in dots), dots[:3]
    assert any("vdpbf16ps" in note for note in done.build.notes)


@pytest.mark.parametrize("target", ["cpu-x86-avx512-bf16", "cpu-znver5"])
def test_quantize_bf16_mlp_for_bf16_targets_uses_vdpbf16ps(target, caplog):
    caplog.set_level(logging.DEBUG, logger="tvm_autoglm.schedule_rules")
    done = compile_model(deep_mlp(width=48), load_target(target), 3, None, None, use_shipped_schedules=False, quantize="bf16")
    _assert_bf16_build(done, caplog, 2)


@pytest.mark.parametrize("target", ["cpu-x86-avx2", "cpu-x86-avx512"])
def test_quantize_bf16_without_the_feature_packs_nothing(target):
    done = compile_model(deep_mlp(width=48), load_target(target), 3, None, None, use_shipped_schedules=False, quantize="bf16", until="relax")
    assert _packed_calls(done.build.mod) == 0
    assert not any("vdpbf16ps" in note for note in done.build.notes)


def test_quantize_bf16_tiny_bert_for_the_bf16_target_uses_vdpbf16ps(zoo_build, caplog):
    caplog.set_level(logging.DEBUG, logger="tvm_autoglm.schedule_rules")
    done = compile_model(str(zoo_build("bert", "torchscript")), load_target("cpu-x86-avx512-bf16"), 3, None, None,
                         use_shipped_schedules=False, quantize="bf16")
    _assert_bf16_build(done, caplog, 4)


@pytest.mark.skipif(not HOST_HAS_BF16, reason="host CPU has no AVX512-BF16: vdpbf16ps builds are compile-checked only")
def test_quantize_bf16_mlp_matches_onnxruntime_where_the_host_has_bf16():
    import tvm_autoglm

    model = deep_mlp(width=48, outlier_layer=-1)
    x = {"x": np.random.default_rng(7).standard_normal((4, 48)).astype("float32")}
    q = tvm_autoglm.compile(model, target="cpu", quantize="bf16")
    assert any("bf16_packed_matmul" in k for k in q.kernels)
    assert one_minus_cos(ort_run(model, x), q.run(x)) <= 1e-3  # bf16 operands, fp32 accumulation


@pytest.mark.parametrize("name,expected", [("cpu-x86-avx512-bf16", True), ("cpu-znver5", True), ("cpu-x86-avx512", False),
                                           ("cpu-x86-avx2", False), ("gpu-ampere", False)])
def test_bf16_kernel_follows_the_target_not_the_host(name, expected):
    assert kernel_choice.use_bf16_kernel(load_target(name)) is expected


def test_auto_plans_bf16_layers_take_the_packed_kernel_too():
    """``--quantize auto``'s per-layer rewrite (int8.apply_plan) packs its bf16 layers on a BF16 target."""
    from tvm_autoglm.quantize import int8, passes_off_for

    plan = ["bf16", "int8", "bf16", "fp32", "fp32"]  # deep_mlp: 4 hidden 48x48 layers + the 48x8 head
    for name, expected in (("cpu-x86-avx512-bf16", 2), ("cpu-x86-avx2", 0)):
        build = compile_model(deep_mlp(width=48), load_target(name), 3, None, None, disabled_passes=passes_off_for("auto"), until="relax").build
        out = int8.apply_plan(build, plan, {}, "auto")
        called = [call.args[0].name_hint for call in relax_calls(out.mod, "relax.call_tir")]
        assert sum("bf16_packed_matmul" in k for k in called) == expected, (name, called)
