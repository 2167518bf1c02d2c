"""Channels-last conv schedule (schedule_rules/conv.py, reached through the Matmul rule).

Tolerance rtol=atol=1e-4 against onnxruntime: both sum each output over
(kh, kw, c) in fp32 but in different orders (onnxruntime's im2col GEMM blocks K).
"""

import numpy as np
import onnxruntime as ort
import pytest

from tvm import relax, s_tir

import tvm_autoglm
from tvm_autoglm import pipeline, zoo
from tvm_autoglm.schedule_rules import Matmul, apply_default_schedules
from tvm_autoglm.schedule_rules.conv import choose_conv_tile, choose_ragged_tile, conv_rows, pixels_outermost, ragged_score
from tvm_autoglm.schedule_rules.matmul import analyze_contraction
from tvm.s_tir.dlight.analysis import normalize_prim_func

from sched_helpers import assert_parallel_vectorized, build_fused, prim_funcs, run

RTOL = ATOL = 1e-4
rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny_resnet():
    return zoo.cached("resnet50", "tiny")


def _conv_kernels(mod):
    return {n: f for n, f in prim_funcs(mod).items() if "conv2d" in n}


def _contraction(func):
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    main = [b for b in infos if b.is_reduction()][0]
    block = sch.get(main.block_rv)
    return block, analyze_contraction(block, main.iters)


def _is_conv_path(func) -> bool:
    block, ana = _contraction(func)
    return ana is not None and conv_rows(block, ana) is not None


def test_tiny_resnet_convs_get_the_conv_schedule(tiny_resnet, target):
    build = pipeline.build_relax(str(tiny_resnet), "cpu-x86-avx2", 3, zoo.input_shapes("resnet50", "tiny"))  # as `target`
    convs = _conv_kernels(build.mod)
    assert len(convs) >= 10
    # every conv (stem 7x7, 3x3s and the 1x1s, which are GEMMs over pixels) takes
    # the pixel-tiled conv path
    spatial = [n for n, f in convs.items() if _is_conv_path(f)]
    assert sorted(spatial) == sorted(convs), set(convs) - set(spatial)
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


@pytest.mark.parametrize(
    "image, channels_in, channels_out, pixels_first",
    [
        ((28, 28), 32, 16, True),  # input 25088 elements > weight 512: re-read the weight
        ((4, 4), 64, 256, False),  # input 1024 < weight 16384: re-read the input
    ],
)
def test_1x1_conv_loop_order_follows_the_larger_operand(target, image, channels_in, channels_out, pixels_first):
    # A 1x1 NHWC conv is a GEMM over pixels; it takes the conv path, which walks the
    # operand that is re-read (the smaller one) inside the other.
    h, w_ = image
    weight = rng.standard_normal((1, 1, channels_in, channels_out)).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.relu(
            relax.op.nn.conv2d(x, relax.const(weight), data_layout="NHWC", kernel_layout="HWIO")
        ),
        {"x": (1, h, w_, channels_in)},
    )
    (func,) = [f for n, f in prim_funcs(mod).items() if "conv2d" in n]
    block, ana = _contraction(func)
    assert conv_rows(block, ana) is not None
    assert pixels_outermost(block, ana) is pixels_first
    x = rng.standard_normal((1, h, w_, channels_in)).astype("float32")
    got = run(apply_default_schedules(mod, target), target, [x])
    ref = np.maximum(np.einsum("nhwc,cf->nhwf", x.astype("float64"), weight[0, 0].astype("float64")), 0)
    np.testing.assert_allclose(got, ref.astype("float32"), rtol=RTOL, atol=ATOL)


def test_ragged_tile_choice():
    # 7-wide rows: 4 + 3 pixels x 2 vectors beat the exact 7 x 1 tile (14 FMAs per 11 loads vs 7 per 8)
    assert choose_ragged_tile(7, 512, 8, (7, 1, 8)) == (4, 2, 8)
    assert ragged_score(7, 4, 2) > 7 / 8
    # 14-wide rows: 6 + 6 + 2 pixels beat the exact 2 x 4 tile
    assert choose_ragged_tile(14, 256, 8, (2, 4, 8)) == (6, 2, 8)
    # a row the (4, 2) tile divides keeps the exact tile
    assert choose_ragged_tile(8, 64, 8, (4, 2, 8)) is None
    # channels that are not whole vectors
    assert choose_ragged_tile(7, 12, 8, None) is None


def test_ragged_rows_keep_parity(target):
    # 7x7 output, weight larger than the input: channel blocks run outermost and each
    # row is a 4-pixel tile plus a 3-pixel tile (two copies of the conv block, no predicate)
    weight = rng.standard_normal((3, 3, 64, 128)).astype("float32")
    bias = rng.standard_normal(128).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.relu(
            relax.op.add(
                relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO"),
                relax.const(bias),
            )
        ),
        {"x": (1, 7, 7, 64)},
    )
    (name,) = [n for n in prim_funcs(mod) if "conv2d" in n]
    block, ana = _contraction(prim_funcs(mod)[name])
    assert not pixels_outermost(block, ana)
    scheduled = apply_default_schedules(mod, target)
    script = scheduled[name].script()
    assert script.count("T.sblock(\"conv2d_nhwc") >= 4, script  # full-tile and remainder blocks (init + update each)
    x = rng.standard_normal((1, 7, 7, 64)).astype("float32")
    got = run(scheduled, target, [x])
    xp = np.pad(x.astype("float64"), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((1, 7, 7, 128))
    for ry in range(3):
        for rx in range(3):
            ref += np.einsum("nhwc,cf->nhwf", xp[:, ry : ry + 7, rx : rx + 7], weight[ry, rx])
    np.testing.assert_allclose(got, np.maximum(ref + bias, 0).astype("float32"), rtol=RTOL, atol=ATOL)


def _loop_extents(func) -> list[int]:
    import tvm
    import tvm_ffi

    loops = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, loops.append), order="post")
    return [int(lp.extent) for lp in loops if isinstance(lp.extent, tvm.tirx.IntImm)]


@pytest.mark.parametrize(
    "image, stride, pixels_first",
    [((20, 20), 1, True), ((9, 9), 1, False), ((12, 12), 2, False)],
)
def test_window_width_and_channels_are_one_reduction_loop(target, image, stride, pixels_first):
    """NHWC: a pixel's input over (kx, c) is one run of KW*C floats, and so is the packed weight.
    The rule walks it as one loop (3 runs of 3*C per 3x3 window, not 9 runs of C)."""
    channels_in, channels_out = 16, 32
    weight = rng.standard_normal((3, 3, channels_in, channels_out)).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.relu(
            relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=1, data_layout="NHWC", kernel_layout="HWIO")
        ),
        {"x": (1, *image, channels_in)},
    )
    (name,) = [n for n in prim_funcs(mod) if "conv2d" in n]
    block, ana = _contraction(prim_funcs(mod)[name])
    assert pixels_outermost(block, ana) is pixels_first
    scheduled = apply_default_schedules(mod, target)
    extents = _loop_extents(scheduled[name])
    assert 3 * channels_in in extents, extents
    assert channels_in not in extents, extents
    x = rng.standard_normal((1, *image, channels_in)).astype("float32")
    got = run(scheduled, target, [x])
    xp = np.pad(x.astype("float64"), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out_h, out_w = (image[0] - 1) // stride + 1, (image[1] - 1) // stride + 1
    ref = np.zeros((1, out_h, out_w, channels_out))
    for ry in range(3):
        for rx in range(3):
            window = xp[:, ry : ry + stride * out_h : stride, rx : rx + stride * out_w : stride]
            ref += np.einsum("nhwc,cf->nhwf", window, weight[ry, rx])
    np.testing.assert_allclose(got, np.maximum(ref, 0).astype("float32"), rtol=RTOL, atol=ATOL)


def test_fused_pixel_tiles_must_not_cross_a_row_end():
    """A fused (y*W + x) tile crossing a row end was written back over both rows' full width (issue #20)."""
    from tvm_autoglm.schedule_rules.conv import rows_aligned

    assert not rows_aligned(58, 4) and not rows_aligned(14, 4) and not rows_aligned(82, 6)
    assert rows_aligned(56, 4) and rows_aligned(2, 4) and rows_aligned(7, 7) and rows_aligned(1, 6)


@pytest.mark.parametrize("name,lanes,registers", [("cpu-x86-avx2", 8, 16), ("cpu-x86-avx512", 16, 32), ("plan512", 16, 32)])
def test_plan512_test_target_plans_like_avx512_but_targets_haswell(name, lanes, registers):
    """tests/targets/cpu-x86-avx2-plan512.json: the rules see AVX-512's width; LLVM still gets mcpu=haswell."""
    from pathlib import Path

    from tvm_autoglm.schedule_rules import _common as C
    from tvm_autoglm.targets import load_target

    path = str(Path(__file__).resolve().parent.parent / "targets" / "cpu-x86-avx2-plan512.json")
    spec = load_target(path if name == "plan512" else name)
    target = spec.tvm_target()
    assert (C.vector_lanes(target, "float32"), C.num_vector_registers(target)) == (lanes, registers)
    if name == "plan512":
        assert spec.tvm_config["mcpu"] == "haswell"
