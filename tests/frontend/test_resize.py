"""ONNX Resize (tvm_autoglm/frontend/resize.py): parity with onnxruntime, structure, refusals.

TVM 0.27's converter was wrong whenever input x scale is not an integer (it maps back through
output/input instead of the scale), divided by zero for align_corners on a size-1 output axis and
got cubic exclude_outside wrong; each of those is a case below (the difftest seed-1 cases are named).

Reference: onnxruntime 1.32 (CPUExecutionProvider). Tolerance: |ours - ref| <= 1e-5 + 1e-5 |ref|
elementwise: nearest is an exact gather, linear/cubic sum at most 16 float32 products whose order
differs from onnxruntime's; a wrong source pixel is off by O(1) on these standard-normal inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import ort_run, relax_calls

import tvm_autoglm
from tvm_autoglm.errors import UnsupportedModelError

RTOL = ATOL = 1e-5
PLAN512 = str(Path(__file__).resolve().parent.parent / "targets" / "cpu-x86-avx2-plan512.json")


def resize_model(configs: list[dict], opset: int = 17, dtype=TensorProto.FLOAT, seed: int = 0):
    """One Resize node per config, each on its own input ``x{i}`` with output ``y{i}``.

    A config: ``shape``, ``mode``, optional ``scales`` / ``sizes`` / ``roi`` (constants) and any
    other attributes. Several nodes per model keep the compile count (the slow part) low.
    Returns (model, feeds).
    """
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs, feeds = [], [], [], [], {}
    for i, cfg in enumerate(configs):
        cfg = dict(cfg)
        shape = cfg.pop("shape")
        names = [f"x{i}"]
        if opset < 11:
            names.append(f"scales{i}")
            inits.append(numpy_helper.from_array(np.array(cfg.pop("scales"), np.float32), f"scales{i}"))
        else:
            roi = cfg.pop("roi", None)
            if roi is not None:
                inits.append(numpy_helper.from_array(np.array(roi, np.float32), f"roi{i}"))
            names.append(f"roi{i}" if roi is not None else "")
            if "scales" in cfg:
                inits.append(numpy_helper.from_array(np.array(cfg.pop("scales"), np.float32), f"scales{i}"))
                names.append(f"scales{i}")
            else:
                inits.append(numpy_helper.from_array(np.array(cfg.pop("sizes"), np.int64), f"sizes{i}"))
                names += ["", f"sizes{i}"]
        nodes.append(helper.make_node("Resize", names, [f"y{i}"], name=f"resize{i}", **cfg))
        inputs.append(helper.make_tensor_value_info(f"x{i}", dtype, shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", dtype, None))
        np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
        feeds[f"x{i}"] = (rng.standard_normal(shape) * 3).astype(np_dtype) if np_dtype.kind == "f" else rng.integers(-50, 50, shape).astype(np_dtype)
    graph = helper.make_graph(nodes, "resize", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    return model, feeds


def assert_parity(configs, opset=17, opt_level=3, target="cpu"):
    model, feeds = resize_model(configs, opset)
    expected = ort_run(model, feeds)
    got = tvm_autoglm.compile(model, target=target, opt_level=opt_level).run(**feeds)
    for i, cfg in enumerate(configs):
        name = f"y{i}"
        assert got[name].shape == expected[name].shape, f"{cfg}: shape {got[name].shape} vs onnxruntime {expected[name].shape}"
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=f"config {cfg}")


COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]

# the difftest seed-1 cases TVM's converter got wrong (index in the comment)
DIFFTEST_CASES = [
    dict(shape=[2, 1, 5, 2], scales=[1, 1, 0.75, 0.5], mode="nearest", coordinate_transformation_mode="asymmetric",
         nearest_mode="round_prefer_floor"),  # i64: 5 x 0.75 = 3.75
    dict(shape=[1, 4, 6], scales=[1, 1, 0.75], mode="nearest", coordinate_transformation_mode="pytorch_half_pixel",
         nearest_mode="ceil"),  # i26: 1-D
    dict(shape=[2, 2, 3, 5], scales=[1, 1, 1.5, 3.0], mode="cubic", coordinate_transformation_mode="half_pixel",
         cubic_coeff_a=-0.5, exclude_outside=1),  # i22
]
# align_corners onto size-1 output axes (TVM divided by zero at codegen), with integer in x scale products
ALIGN_CORNERS_SIZE_1 = [
    dict(shape=[1, 3, 2, 4, 1], scales=[1, 1, 0.5, 1.5, 2.0], mode="linear", coordinate_transformation_mode="align_corners"),
    dict(shape=[2, 3, 2, 4, 2], scales=[1, 1, 0.5, 0.25, 1.5], mode="nearest", coordinate_transformation_mode="align_corners",
         nearest_mode="round_prefer_floor"),
    dict(shape=[1, 2, 1, 4], sizes=[1, 2, 3, 1], mode="cubic", coordinate_transformation_mode="align_corners"),
]
# i33 and i48: align_corners where in x scale is not an integer (2 x 1.5 x ... , 2 x 0.75): refused, see below
AMBIGUOUS_CASES = [
    dict(shape=[1, 3, 2, 4, 1], scales=[1, 1, 1.5, 1.5, 1.5], mode="linear", coordinate_transformation_mode="align_corners"),
    dict(shape=[2, 3, 2, 4, 2], scales=[1, 1, 0.75, 1.5, 1.5], mode="nearest", coordinate_transformation_mode="align_corners",
         nearest_mode="round_prefer_floor"),
]


def test_difftest_cases_match_onnxruntime():
    assert_parity(DIFFTEST_CASES + ALIGN_CORNERS_SIZE_1, opt_level=0)


@pytest.mark.parametrize("index", range(len(AMBIGUOUS_CASES)))
def test_refuses_where_onnxruntime_and_the_onnx_reference_disagree(index):
    """align_corners / tf_crop_and_resize divide by the output extent minus 1: onnxruntime floors
    in x scale first, the ONNX reference (conformance expectations) does not; 2 x 1.5 = 3 agrees, 2 x 0.75 not."""
    model, _ = resize_model([AMBIGUOUS_CASES[index]])
    message = _refused(model)
    assert "resize0" in message and "align_corners" in message and "is not an integer" in message, message


@pytest.mark.parametrize("nearest_mode", NEAREST)
def test_nearest_every_coordinate_mode(nearest_mode):
    """Non-integer up/down scales and sizes, odd extents, 1-D / 2-D / 3-D spatial."""
    configs = []
    for k, coord in enumerate(COORDS):
        attrs = dict(mode="nearest", coordinate_transformation_mode=coord, nearest_mode=nearest_mode)
        if coord == "align_corners":  # in x scale must be an integer (see the refusal test): 8 x 0.75, 4 x 1.25
            configs.append(dict(shape=[1, 2, 8, 4], scales=[1, 1, 0.75, 1.25], **attrs))
        else:
            configs.append(dict(shape=[1, 2, 7, 5], scales=[1, 1, 0.6, 1.7], **attrs))
        configs.append(dict(shape=[2, 3, 9], sizes=[2, 3, 4 + k], **attrs))
        configs.append(dict(shape=[1, 1, 3, 5, 4], sizes=[1, 1, 5, 3, 7], **attrs))
    # a tie computed inexactly: 7 -> 8 asymmetric maps output 4 to 3.4999998 in float32
    configs.append(dict(shape=[1, 1, 2, 7], sizes=[1, 1, 3, 8], mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode=nearest_mode))
    assert_parity(configs, opt_level=3)


@pytest.mark.parametrize("opt_level", [0, 3])
def test_linear_every_coordinate_mode(opt_level):
    configs = []
    for coord in COORDS:
        attrs = dict(mode="linear", coordinate_transformation_mode=coord)
        if coord == "align_corners":  # down and up in one node; 4 x 0.75 and 6 x 2.5 are integers
            configs.append(dict(shape=[1, 3, 4, 6], scales=[1, 1, 0.75, 2.5], **attrs))
        else:
            configs.append(dict(shape=[1, 3, 5, 7], scales=[1, 1, 0.75, 1.3], **attrs))
        configs.append(dict(shape=[2, 2, 4, 3], sizes=[2, 2, 1, 5], **attrs))  # size-1 output axis
        configs.append(dict(shape=[1, 2, 3, 1, 4], sizes=[1, 2, 5, 3, 2], **attrs))  # trilinear from a size-1 axis
    configs.append(dict(shape=[6, 5], scales=[0.5, 1.9], mode="linear", coordinate_transformation_mode="half_pixel"))  # 2-D input
    configs.append(dict(shape=[1, 5, 6, 3], scales=[1, 1.4, 0.7, 1], mode="linear"))  # NHWC: outer and inner scales 1
    assert_parity(configs, opt_level=opt_level)


def test_cubic_every_coordinate_mode():
    configs = []
    for coord in COORDS:
        for a, exclude in ((-0.75, 0), (-0.5, 1)):
            attrs = dict(mode="cubic", coordinate_transformation_mode=coord, cubic_coeff_a=a, exclude_outside=exclude)
            if coord == "align_corners":  # 6 x 0.5 and 4 x 1.25 are integers
                configs.append(dict(shape=[1, 2, 6, 4], scales=[1, 1, 0.5, 1.25], **attrs))
            else:
                configs.append(dict(shape=[1, 2, 6, 5], scales=[1, 1, 0.7, 2.3], **attrs))
    configs.append(dict(shape=[1, 1, 1, 4], sizes=[1, 1, 3, 2], mode="cubic", coordinate_transformation_mode="align_corners"))
    assert_parity(configs, opt_level=3)


def test_tf_crop_and_resize_extrapolates():
    configs = []
    for mode in ("nearest", "linear", "cubic"):
        configs.append(dict(shape=[1, 2, 5, 6], sizes=[1, 2, 7, 4], roi=[0, 0, -0.2, 0.1, 1, 1, 1.3, 0.8], mode=mode,
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-7.5))
        configs.append(dict(shape=[1, 2, 4, 6], scales=[1, 1, 1.5, 0.5], roi=[0, 0, 0.25, 0, 1, 1, 0.6, 1], mode=mode,
                            coordinate_transformation_mode="tf_crop_and_resize"))
    assert_parity(configs, opt_level=3)


def test_opset_18_axes_policy_and_19_half_pixel_symmetric():
    configs = [
        dict(shape=[1, 3, 5, 7], scales=[0.6, 1.5], axes=[2, -1], mode="linear"),
        dict(shape=[1, 3, 5, 7], sizes=[9, 4], axes=[2, 3], mode="nearest", keep_aspect_ratio_policy="not_larger"),
        dict(shape=[1, 3, 5, 7], sizes=[9, 4], axes=[2, 3], mode="cubic", keep_aspect_ratio_policy="not_smaller"),
        dict(shape=[2, 4, 6], sizes=[2, 4, 9], mode="nearest", coordinate_transformation_mode="half_pixel_symmetric"),
        dict(shape=[1, 2, 6, 9], scales=[1, 1, 0.75, 1.25], mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
    ]
    assert_parity(configs, opset=19, opt_level=3)


def test_opset_10():
    configs = [dict(shape=[1, 2, 5, 3], scales=[1, 1, 1.5, 0.7], mode="nearest"),
               dict(shape=[1, 2, 5, 3], scales=[1, 1, 0.6, 2.5], mode="linear")]
    assert_parity(configs, opset=10, opt_level=0)


def test_avx512_plan_on_this_host():
    """The same kernels under the 512-bit plan (runs on AVX2 hosts, see tests/targets)."""
    assert_parity(DIFFTEST_CASES[:3], opt_level=3, target=PLAN512)


def test_one_gather_kernel_and_no_tvm_resize():
    """Structure: our kernel replaces relax.image.resize*; identity resizes are no kernel at all."""
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.targets import load_target

    model, _ = resize_model([DIFFTEST_CASES[0], dict(shape=[1, 2, 3, 3], scales=[1, 1, 1.2, 1.2], mode="linear")])
    build = build_relax(model, load_target("cpu"), 0, None, (), ())
    assert not relax_calls(build.mod, "relax.image.resize2d")
    names = [gv.name_hint for gv in build.mod.get_global_vars()]
    assert sum(name.startswith("resize") for name in names) == 1, names  # 3 x 1.2 -> 3: a copy, as in onnxruntime


def test_same_shape_is_a_copy():
    """3 x 1.2 floors to 3: onnxruntime copies the input (no resampling at scale 1.2); so do we, exactly."""
    model, feeds = resize_model([dict(shape=[1, 2, 3, 3], scales=[1, 1, 1.2, 1.2], mode="linear")])
    got = tvm_autoglm.compile(model, opt_level=0).run(**feeds)["y0"]
    np.testing.assert_array_equal(got, ort_run(model, feeds)["y0"])
    np.testing.assert_array_equal(got, feeds["x0"])


def _refused(model) -> str:
    with pytest.raises(UnsupportedModelError) as err:
        tvm_autoglm.compile(model, opt_level=0)
    return str(err.value)


@pytest.mark.parametrize("attr, value, needle", [
    ("antialias", 1, "antialias=1"),
    ("mode", "bilinear", "mode='bilinear'"),
    ("coordinate_transformation_mode", "edge", "coordinate_transformation_mode='edge'"),
    ("nearest_mode", "round", "nearest_mode='round'"),
    ("keep_aspect_ratio_policy", "fit", "keep_aspect_ratio_policy='fit'"),
])
def test_refuses_attribute(attr, value, needle):
    model, _ = resize_model([dict(dict(shape=[1, 1, 4, 4], scales=[1, 1, 2, 2], mode="nearest"), **{attr: value})], opset=19)
    message = _refused(model)
    assert "resize0" in message and needle in message, message


def test_refuses_scales_from_a_graph_input():
    model, _ = resize_model([dict(shape=[1, 1, 4, 4], scales=[1, 1, 2, 2], mode="linear")])
    graph = model.graph
    del graph.initializer[:]
    graph.input.append(helper.make_tensor_value_info("scales0", TensorProto.FLOAT, [4]))
    message = _refused(model)
    assert "scales ('scales0') is not a constant" in message, message


def test_refuses_roi_from_a_graph_input():
    model, _ = resize_model([dict(shape=[1, 1, 4, 4], sizes=[1, 1, 3, 3], roi=[0, 0, 0, 0, 1, 1, 1, 1], mode="linear",
                                  coordinate_transformation_mode="tf_crop_and_resize")])
    graph = model.graph
    kept = [init for init in graph.initializer if init.name != "roi0"]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.append(helper.make_tensor_value_info("roi0", TensorProto.FLOAT, [8]))
    message = _refused(model)
    assert "roi ('roi0') is not a constant" in message, message


def test_refuses_integer_interpolation():
    model, _ = resize_model([dict(shape=[1, 1, 4, 4], scales=[1, 1, 1.5, 1.5], mode="linear")], dtype=TensorProto.INT32)
    message = _refused(model)
    assert "mode='linear' with a int32 input" in message, message


def test_integer_nearest_is_exact():
    """Nearest on int32 is a gather: compared exactly (tolerance 0) with onnxruntime."""
    model, feeds = resize_model([dict(shape=[1, 2, 5, 3], scales=[1, 1, 0.6, 2.5], mode="nearest")], dtype=TensorProto.INT32)
    got = tvm_autoglm.compile(model, opt_level=0).run(**feeds)
    np.testing.assert_array_equal(got["y0"], ort_run(model, feeds)["y0"])


def _import(model):
    """The converter alone (``compile`` wants static inputs; a symbolic dim reaches the converter only here)."""
    from tvm_autoglm.pipeline import import_onnx

    return import_onnx(model, {}, "test")


def test_refuses_symbolic_resized_axis():
    model, _ = resize_model([dict(shape=[1, 2, 4, 4], scales=[1, 1, 1.5, 1], mode="nearest")])
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(UnsupportedModelError) as err:
        _import(model)
    message = str(err.value)
    assert "resize0" in message and "axis 2" in message and "symbolic" in message, message


def test_symbolic_batch_keeps_its_extent():
    """Only resized axes need static extents: a symbolic batch stays symbolic in the output shape."""
    model, _ = resize_model([dict(shape=[3, 2, 5, 4], scales=[1, 1, 0.6, 1.5], mode="linear")])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    shape = _import(model)["main"].ret_ty.shape.values
    assert str(shape[0]) == "N" and [int(d) for d in shape[1:]] == [2, 3, 6], shape


def test_refuses_too_many_cubic_terms():
    """Cubic over four axes is 256 terms per output (onnxruntime has no such mode either)."""
    model, _ = resize_model([dict(shape=[2, 2, 3, 3], scales=[1.5, 1.5, 1.5, 1.5], mode="cubic")])
    message = _refused(model)
    assert "256 terms" in message, message
