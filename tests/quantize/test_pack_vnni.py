"""--quantize int8 on AVX-512 VNNI targets: uint8-shifted activations x int8 weights packed for vpdpbusd.

What runs on every host: the packing and the +128 compensation in numpy, the rewrite's choice of
kernel per weight shape, and whole quantized Relax modules through the VNNI layout with the
portable dot product (Int8MatmulVNNIPortable), equal to the AVX2 build's output. What needs a
VNNI host is only the vpdpbusd instruction itself (tests/schedule_rules/test_vnni_matmul.py);
here the pinned VNNI targets are compiled and their assembly inspected.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from helpers import ort_run
from quantize_models import deep_mlp, one_minus_cos
from tvm_autoglm.pipeline import compile_model
from tvm_autoglm.quantize import int8, pack_vnni
from tvm_autoglm.schedule_rules import DEFAULT_RULES, apply_default_schedules
from tvm_autoglm.schedule_rules.vnni_matmul import Int8MatmulVNNIPortable
from tvm_autoglm.targets import load_target

from zoo_fixtures import zoo_build, zoo_dir  # noqa: F401  (fixtures)


def test_layout_is_groups_of_4_rows_in_16_column_blocks_zero_padded():
    wq = (np.arange(7 * 32, dtype=np.int64) % 251 - 125).reshape(7, 32).astype(np.int8)  # K = 7: padded to 8
    p = pack_vnni.pack_weight(wq)
    assert p.shape == (2, 2, 16, 4) and p.dtype == np.int8
    for j, g, lane, q in [(0, 0, 0, 0), (1, 1, 15, 2), (0, 1, 3, 1), (1, 0, 9, 3)]:
        assert p[j, g, lane, q] == wq[4 * g + q, 16 * j + lane]
    assert not p[:, 1, :, 3].any()  # k = 7 is padding: zero weights
    np.testing.assert_array_equal(pack_vnni.unpack_weight(p, 7), wq)


def test_packable_and_its_refusals():
    assert pack_vnni.packable(5, 16) and pack_vnni.packable(768, 3072) and pack_vnni.packable(30, 48)
    assert not pack_vnni.packable(64, 24)  # N not a whole zmm of int32 columns
    assert not pack_vnni.packable(4, 16)  # one group of 4: the rule's reduction loop would vanish
    with pytest.raises(ValueError, match="does not take the VNNI layout"):
        pack_vnni.pack_weight(np.zeros((16, 24), np.int8))
    with pytest.raises(ValueError, match="int8 weight"):
        pack_vnni.pack_weight(np.zeros((16, 16), np.int16))


@pytest.mark.parametrize("rows,k,n", [(1, 5, 16), (17, 30, 48), (3, 129, 32), (8, 64, 16)])
def test_shift_and_compensation_reproduce_the_signed_product(rows, k, n):
    """sum (x + 128) W - 128 sum W == x W, exactly, through the packed (padded) weight; extremes included."""
    rng = np.random.default_rng(k * n + rows)
    xq = rng.integers(-127, 128, size=(rows, k))
    xq[0, :] = 127
    xq[-1, :] = -127
    wq = rng.integers(-127, 128, size=(k, n)).astype(np.int8)
    wq[:, 0] = 127
    wq[:, -1] = -127
    np.testing.assert_array_equal(pack_vnni.reference(xq, wq), xq.astype(np.int64) @ wq.astype(np.int64))
    comp = pack_vnni.compensation(wq)
    assert comp.dtype == np.int32 and comp[0] == 128 * 127 * k and comp[-1] == -128 * 127 * k


@pytest.mark.parametrize("name,expected", [("cpu-x86-avx512", True), ("cpu-znver5", True), ("cpu-x86-avx2", False),
                                           ("cpu-znver3", False), ("gpu-ampere", False)])
def test_vnni_path_follows_the_target_not_the_host(name, expected):
    assert int8.use_vnni(load_target(name)) is expected


def _mlp_module(k: int, widths: list[int], rows: int = 5, seed: int = 0):
    """x[rows, k] -> matmul(W_i) chain (with tanh between) over the given output widths."""
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
                h = bb.emit(relax.op.matmul(h, relax.const(w)))
                if i < len(widths) - 1:
                    h = bb.emit(relax.op.tanh(h))
                width = n
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get(), weights


def test_rewrite_picks_the_kernel_per_weight_shape():
    # N = 48: VNNI; N = 24: not 16-wide, the int16 vpmaddwd kernel; N = 12: neither, the plain int8 matmul
    mod, _ = _mlp_module(30, [48, 24, 12])
    out, sites = int8.rewrite(mod, vnni=True, packed=True)
    text = out.script()
    assert len(sites) == 3
    assert text.count("vnni_u8s8_matmul") >= 1 and "int16_packed_matmul" in text and text.count('out_dtype="int32"') == 1
    # without the target's VNNI the same module has no VNNI kernel
    assert "vnni_u8s8_matmul" not in int8.rewrite(mod, packed=True)[0].script()
    # VNNI without the int16 packing: the 24-wide site falls back to the plain matmul, not the int16 kernel
    text = int8.rewrite(mod, vnni=True, packed=False)[0].script()
    assert "vnni_u8s8_matmul" in text and "int16_packed_matmul" not in text and text.count('out_dtype="int32"') == 2


def _run_module(mod, target, rules, x):
    fused = relax.get_pipeline("zero")(mod)
    scheduled = apply_default_schedules(fused, target, rules)
    ex = tvm.compile(scheduled, target)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy(), scheduled


@pytest.mark.parametrize("rows,k,widths", [(5, 30, [48, 32]), (1, 7, [16]), (17, 64, [64, 16])])
def test_vnni_module_equals_the_avx2_build_on_any_host(rows, k, widths):
    """The VNNI rewrite + schedule (portable dot product) vs the vpmaddwd build: same integers, same floats."""
    target = load_target("cpu-x86-avx2").tvm_target()
    mod, weights = _mlp_module(k, widths, rows)
    x = np.random.default_rng(rows + k).standard_normal((rows, k)).astype("float32")
    vnni_mod, _ = int8.rewrite(mod, vnni=True, packed=True)
    got, scheduled = _run_module(vnni_mod, target, (Int8MatmulVNNIPortable(),) + DEFAULT_RULES, x)
    vnni_kernels = [name for name, f in ((g.name_hint, f) for g, f in scheduled.functions_items()) if "vnni_u8s8_matmul" in name]
    assert len(vnni_kernels) == len(widths)
    for name in vnni_kernels:
        assert "T.Cast(\"int32x16\"" in scheduled[name].script()  # the portable 16-lane dot product ran, tensorized
    want, _ = _run_module(int8.rewrite(mod, packed=True)[0], target, DEFAULT_RULES, x)
    np.testing.assert_array_equal(got, want)
    ref = x.astype(np.float64)  # float64 reference of the fp32 model: int8's error, stated
    for i, w in enumerate(weights):
        ref = ref @ w.astype(np.float64)
        if i < len(weights) - 1:
            ref = np.tanh(ref)
    cos = float((got.ravel() @ ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos >= 0.99, cos  # the int8 tolerance of test_quantize_int8


def _kernel_asm(func, target) -> str:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    return lib.mod.inspect_source("asm")


def _assert_vnni_build(done, target, caplog, min_kernels: int) -> None:
    kernels = {g.name_hint: f for g, f in done.scheduled.mod.functions_items() if "vnni_u8s8_matmul" in g.name_hint}
    assert len(kernels) >= min_kernels, list(kernels)
    for name, func in kernels.items():
        assert f"{name} scheduled by Int8MatmulVNNI" in caplog.text
        dots = re.findall(r"\bvpdpbusd\s+[^\n]*", _kernel_asm(func, target))
        assert dots and all("%zmm" in d for d in dots), (name, dots[:3])
    assert re.search(r"\bvpdpbusd\b", done.executable.mod.imports[0].inspect_source("asm"))


def test_quantized_mlp_for_the_vnni_target_uses_vpdpbusd(caplog):
    """Compile-only on any host: the fast version of the tiny-bert check below."""
    caplog.set_level(logging.DEBUG, logger="tvm_autoglm.schedule_rules")
    spec = load_target("cpu-x86-avx512")
    done = compile_model(deep_mlp(width=48), spec, 3, None, None, use_shipped_schedules=False, quantize="int8")
    _assert_vnni_build(done, spec.tvm_target(), caplog, 1)
    names = [g.name_hint for g, _ in done.scheduled.mod.functions_items()]
    assert any("int16_packed_matmul" in n for n in names)  # the 8-wide head is not VNNI-packable: vpmaddwd kernel


def test_quantized_tiny_bert_for_the_vnni_target_uses_vpdpbusd(zoo_build, caplog):
    """Every int8 matmul of tiny bert is a vpdpbusd kernel on zmm (compile-only: runs on any host)."""
    caplog.set_level(logging.DEBUG, logger="tvm_autoglm.schedule_rules")
    spec = load_target("cpu-x86-avx512")
    done = compile_model(str(zoo_build("bert", "torchscript")), spec, 3, None, None, use_shipped_schedules=False, quantize="int8")
    _assert_vnni_build(done, spec.tvm_target(), caplog, 4)
    # no int8 site fell back: the only other matmul kernel is attention's activation x activation one (fp32)
    others = [k for k in done.manifest["kernels"] if "matmul" in k and "vnni_u8s8_matmul" not in k]
    assert all("relax_matmul" in k for k in others) and not any("int16_packed" in k for k in others), others


@pytest.mark.skipif(not pack_vnni.target_has_vnni(load_target("cpu").tvm_target()),
                    reason="host CPU has no AVX-512 VNNI: vpdpbusd builds are compile-checked only")
def test_quantized_tiny_bert_matches_onnxruntime_where_the_host_has_vnni(zoo_build):
    import tvm_autoglm
    from tvm_autoglm import zoo

    path = zoo_build("bert", "torchscript")
    inputs = zoo.example_inputs("bert", "tiny", seq=16, seed=1)
    q = tvm_autoglm.compile(path, target="cpu", quantize="int8")
    assert any("vnni_u8s8_matmul" in k for k in q.kernels)
    assert one_minus_cos(ort_run(path, inputs), q.run(inputs)) <= 0.01  # the int8 tolerance of test_pack's AVX2 check
