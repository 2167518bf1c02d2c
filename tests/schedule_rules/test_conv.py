"""Channels-last conv schedule (schedule_rules/conv.py, reached through the Matmul rule).

Tolerance rtol=atol=1e-4 against onnxruntime: both sum each output over
(kh, kw, c) in fp32 but in different orders (onnxruntime's im2col GEMM blocks K).
"""

import numpy as np
import onnxruntime as ort
import pytest

from tvm import s_tir

import tvm_autoglm
from tvm_autoglm import pipeline, zoo
from tvm_autoglm.schedule_rules import Matmul
from tvm_autoglm.schedule_rules.conv import choose_conv_tile, conv_rows
from tvm_autoglm.schedule_rules.matmul import analyze_contraction
from tvm.s_tir.dlight.analysis import normalize_prim_func

from sched_helpers import assert_parallel_vectorized, prim_funcs

RTOL = ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_resnet():
    return zoo.cached("resnet50", "tiny")


def _conv_kernels(mod):
    return {n: f for n, f in prim_funcs(mod).items() if "conv2d" in n}


def _is_conv_path(func) -> bool:
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    main = [b for b in infos if b.is_reduction()][0]
    block = sch.get(main.block_rv)
    ana = analyze_contraction(block, main.iters)
    return ana is not None and conv_rows(block, ana) is not None


def test_tiny_resnet_convs_get_the_conv_schedule(tiny_resnet, target):
    build = pipeline.build_relax(str(tiny_resnet), "cpu", 3, zoo.input_shapes("resnet50", "tiny"))
    convs = _conv_kernels(build.mod)
    assert len(convs) >= 10
    # the KxK convs (stem 7x7, 3x3s) take the pixel-tiled conv path; 1x1 convs
    # (one reduction axis after unit loops are dropped) are plain GEMMs for the
    # generic tile, which measured as fast on resnet50's packed 1x1 layers
    spatial = [n for n, f in convs.items() if _is_conv_path(f)]
    assert len(spatial) >= 5 and any("conv2d_packed_" in n for n in spatial), spatial
    for name, func in convs.items():
        sch = Matmul().apply(func, target, False)
        assert sch is not None, name
        assert_parallel_vectorized(sch.mod["main"])


def test_tiny_resnet_parity_with_onnxruntime(tiny_resnet):
    inputs = zoo.example_inputs("resnet50", "tiny")
    model = tvm_autoglm.compile(str(tiny_resnet), target="cpu", opt_level=3, input_shapes=zoo.input_shapes("resnet50", "tiny"))
    assert model.manifest["tuning"]["plain_kernels"] == 0
    got = list(model.run(**inputs).values())
    want = ort.InferenceSession(str(tiny_resnet), providers=["CPUExecutionProvider"]).run(None, inputs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_matmul_is_not_taken_for_a_conv(target):
    # a plain dense kernel has one reduction axis and one row axis: the generic tile keeps it
    from tvm import relax

    from sched_helpers import build_fused

    w = np.random.default_rng(0).standard_normal((64, 32)).astype("float32")
    mod = build_fused(lambda x: relax.op.matmul(x, relax.const(w)), {"x": (16, 64)})
    (func,) = prim_funcs(mod).values()
    assert not _is_conv_path(func)


def test_tile_choice_avx2():
    assert choose_conv_tile(49, 512, 8, 16) == (7, 1, 8)  # 7x7 layers: 7 pixels x 1 vector
    assert choose_conv_tile(56, 64, 8, 16) == (4, 2, 8)
    assert choose_conv_tile(14, 256, 8, 16) == (2, 4, 8)
    assert choose_conv_tile(56, 6, 8, 16) is None  # no whole vector of channels: generic rule
