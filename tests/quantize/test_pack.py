"""--quantize int8 on AVX2: weights packed for vpmaddwd at compile time; same integers, same outputs."""

from __future__ import annotations


import dataclasses
import numpy as np
import pytest


import tvm_autoglm  # noqa: E402
from helpers import ort_run  # noqa: E402
from quantize_models import deep_mlp, one_minus_cos  # noqa: E402
from tvm_autoglm.quantize import int8, pack  # noqa: E402
from tvm_autoglm.quantize.sensitivity import cosine  # noqa: E402
from tvm_autoglm.targets import load_target  # noqa: E402


@pytest.fixture
def avx2_host():
    """A host that can run the vpmaddwd kernel (the rule is in DEFAULT_RULES; its target must have AVX2)."""
    if not pack.target_has_avx2(load_target("cpu").tvm_target()):
        pytest.skip("host CPU target has no AVX2")


def test_pack_layout_is_pairs_of_rows_in_8_column_blocks():
    wq = np.arange(6 * 16, dtype=np.int64).reshape(6, 16).astype(np.int8)
    p = pack.pack_weight(wq)
    assert p.shape == (2, 3, 8, 2) and p.dtype == np.int16
    for j, q_, l, r in [(0, 0, 0, 0), (1, 2, 7, 1), (0, 1, 3, 1), (1, 0, 5, 0)]:
        assert p[j, q_, l, r] == wq[2 * q_ + r, 8 * j + l]
    np.testing.assert_array_equal(pack.unpack_weight(p), wq)
    assert pack.packable(6, 16) and not pack.packable(5, 16) and not pack.packable(6, 12)
    with pytest.raises(ValueError, match="does not pack"):
        pack.pack_weight(np.zeros((5, 16), np.int8))


def _cpu_target_with_mcpu(mcpu: str):
    spec = load_target("cpu-x86-avx2")
    return dataclasses.replace(spec, name=f"cpu-{mcpu}", tvm_config={**spec.tvm_config, "mcpu": mcpu})


@pytest.mark.parametrize("name", ["cpu-x86-avx2", "cpu-x86-avx512"])
def test_packed_path_on_cpu_targets_with_avx2(name):
    """Decided from the target's features, never the host's: both pinned x86 targets pack (AVX-512 implies AVX2)."""
    assert int8.use_packed(load_target(name))


def test_packed_path_off_without_avx2_or_off_the_cpu():
    assert not int8.use_packed(_cpu_target_with_mcpu("ivybridge"))  # AVX, no AVX2: no ymm vpmaddwd
    assert not int8.use_packed(_cpu_target_with_mcpu("x86-64"))
    assert not int8.use_packed(load_target("gpu-ampere"))


def test_int8_rule_precedes_the_generic_matmul_rule():
    """What ``use_packed`` relies on: without Int8MatmulAVX2 first, the generic Matmul rule would take the
    packed kernel and schedule it ~1.8x slower than the plain int8 matmul."""
    from tvm_autoglm.schedule_rules import DEFAULT_RULES, Int8MatmulAVX2, Matmul

    kinds = [type(rule) for rule in DEFAULT_RULES]
    assert Int8MatmulAVX2 in kinds and kinds.index(Int8MatmulAVX2) < kinds.index(Matmul)


def test_packed_int8_mlp_equals_plain_int8_and_matches_fp32(avx2_host, monkeypatch):
    model = deep_mlp(outlier_layer=-1)
    x = {"x": np.random.default_rng(7).standard_normal((4, 32)).astype("float32")}
    ref = ort_run(model, x)
    packed = tvm_autoglm.compile(model, quantize="int8")
    matmuls = [k for k in packed.kernels if "matmul" in k]
    # every site took the packed kernel (4 hidden layers share one 32x32 kernel, the head has its own)
    assert len(matmuls) == 2 and all("int16_packed_matmul" in k for k in matmuls)
    monkeypatch.setattr(int8, "use_packed", lambda spec: False)
    plain = tvm_autoglm.compile(model, quantize="int8")
    assert not any("int16_packed_matmul" in k for k in plain.kernels)
    got, want = packed.run(x)["y"], plain.run(x)["y"]
    # same int8 integers (the packed kernel rounds half-to-even, the plain one half-away: no ties here), exact int32 sums, same epilogue
    np.testing.assert_array_equal(got, want)
    assert cosine(ref["y"], got) >= 0.99  # the int8 tolerance of test_quantize_int8


def test_packed_int8_tiny_bert_matches_fp32(avx2_host, zoo_build, caplog):
    import logging

    from tvm_autoglm import zoo

    caplog.set_level(logging.DEBUG, logger="tvm_autoglm.schedule_rules")
    path = zoo_build("bert", "torchscript")
    inputs = zoo.example_inputs("bert", "tiny", seq=16, seed=1)
    ref = ort_run(path, inputs)
    q = tvm_autoglm.compile(path, quantize="int8")
    matmuls = [k for k in q.kernels if "int16_packed_matmul" in k]
    assert len(matmuls) >= 2  # [1, seq, H] activations: the batch axis is kept, the kernel still packs
    for name in matmuls:  # ... and the vpmaddwd rule, not the generic Matmul rule, scheduled each one
        assert f"{name} scheduled by Int8MatmulAVX2" in caplog.text
    assert one_minus_cos(ref, q.run(inputs)) <= 0.01


from zoo_fixtures import zoo_build, zoo_dir  # noqa: E402,F401  (fixtures)


def test_unpackable_weights_keep_the_plain_int8_matmul():
    from tvm import relax

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(rng.standard_normal((16, 12)).astype("float32"))))  # N=12: not a multiple of 8
            out = bb.emit_output(relax.op.matmul(h, relax.const(rng.standard_normal((12, 8)).astype("float32"))))  # K=12, N=8: packs
        bb.emit_func_output(out)
    mod, sites = int8.rewrite(bb.get(), packed=True)
    text = mod.script()
    assert len(sites) == 2
    assert text.count('out_dtype="int32"') == 1  # the 16x12 site stays an int8 R.matmul
    assert text.count("int16_packed_matmul") >= 1 and "T.nearbyint" in text  # the 12x8 site is the packed kernel
