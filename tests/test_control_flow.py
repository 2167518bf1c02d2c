"""ONNX ``If`` end to end, and ``--freeze-input`` (binding an input to a constant before import).

References are onnxruntime on the original model. Tolerance: rtol 1e-5, atol 1e-5 (fp32 matmul of
K<=9 terms; no approximated math on these paths).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from _onnx_builders import make_model, value_info
from helpers import assert_clean_error, cli

import tvm_autoglm
from tvm_autoglm.errors import InputError

RTOL = ATOL = 1e-5
SR_ON = 16000  # the then-branch value of the sample-rate switch


def sr_switch_model(n: int = 3, k: int = 5, m: int = 7, cond_shape=()) -> onnx.ModelProto:
    """y = 2 * (sr == 16000 ? relu(x @ w) : tanh(x @ w2 + b)): an If on a scalar int64 run-time input."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.standard_normal((k, m)).astype("float32"), "w"),
        numpy_helper.from_array(rng.standard_normal((k, m)).astype("float32"), "w2"),
        numpy_helper.from_array(rng.standard_normal(m).astype("float32"), "b"),
        numpy_helper.from_array(np.array(SR_ON, dtype=np.int64).reshape(cond_shape), "sr_on"),
    ]
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t0"]), helper.make_node("Relu", ["t0"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", TP.FLOAT, [n, m])])
    else_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w2"], ["e0"]), helper.make_node("Add", ["e0", "b"], ["e1"]),
         helper.make_node("Tanh", ["e1"], ["e_out"])],
        "else", [], [helper.make_tensor_value_info("e_out", TP.FLOAT, [n, m])])
    nodes = [
        helper.make_node("Equal", ["sr", "sr_on"], ["cond"]),
        helper.make_node("If", ["cond"], ["y0"], then_branch=then_g, else_branch=else_g, name="sr_switch"),
        helper.make_node("Add", ["y0", "y0"], ["y"]),
    ]
    return make_model(nodes, [value_info("x", [n, k]), value_info("sr", cond_shape, TP.INT64)], {"y": [n, m]}, inits,
                      name="sr_switch", ir_version=onnx.IR_VERSION)


def shape_switch_model() -> onnx.ModelProto:
    """An If on the input's second dim (Shape -> Gather -> Equal): static shapes make it a constant."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["width"], axis=0),
        helper.make_node("Equal", ["width", "five"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="width_switch",
                         then_branch=helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                                                       [helper.make_tensor_value_info("t", TP.FLOAT, None)]),
                         else_branch=helper.make_graph([helper.make_node("Sigmoid", ["x"], ["e"])], "else", [],
                                                       [helper.make_tensor_value_info("e", TP.FLOAT, None)])),
    ]
    inits = [numpy_helper.from_array(np.array(1, dtype=np.int64), "one"), numpy_helper.from_array(np.array(5, dtype=np.int64), "five"),
             numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    return make_model(nodes, {"x": ["batch", "width"]}, {"y": ["batch", "width"]}, inits, name="shape_switch", ir_version=onnx.IR_VERSION)


def nested_switch_model() -> onnx.ModelProto:
    """mode (bool) and sr (int64) both at run time: if mode: (if sr == 16000: x * 3 else: exp(x)) else: -x."""
    inner = helper.make_node(
        "If", ["is16k"], ["inner_out"], name="inner",
        then_branch=helper.make_graph([helper.make_node("Mul", ["x", "three"], ["i_t"])], "i_then", [],
                                      [helper.make_tensor_value_info("i_t", TP.FLOAT, [4, 3])]),
        else_branch=helper.make_graph([helper.make_node("Exp", ["x"], ["i_e0"]), helper.make_node("Sqrt", ["i_e0"], ["i_e"])],
                                      "i_else", [], [helper.make_tensor_value_info("i_e", TP.FLOAT, [4, 3])]))
    outer = helper.make_node(
        "If", ["mode"], ["y"], name="outer",
        then_branch=helper.make_graph([helper.make_node("Equal", ["sr", "sr_on"], ["is16k"]), inner], "o_then", [],
                                      [helper.make_tensor_value_info("inner_out", TP.FLOAT, [4, 3])]),
        else_branch=helper.make_graph([helper.make_node("Neg", ["x"], ["o_e"])], "o_else", [],
                                      [helper.make_tensor_value_info("o_e", TP.FLOAT, [4, 3])]))
    inits = [numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three"), numpy_helper.from_array(np.array(SR_ON, dtype=np.int64), "sr_on")]
    return make_model([outer], [value_info("x", [4, 3]), value_info("mode", [], TP.BOOL), value_info("sr", [], TP.INT64)], {"y": [4, 3]}, inits,
                      name="nested", ir_version=onnx.IR_VERSION)


def _ort(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _x(shape=(3, 5), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _relax_ifs(mod) -> int:
    from tvm import relax

    found = []
    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, lambda e: found.append(e) if isinstance(e, relax.If) else None)
    return len(found)


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_if_on_a_runtime_scalar_matches_onnxruntime_on_both_branches(opt_level):
    model = sr_switch_model()
    compiled = tvm_autoglm.compile(model, opt_level=opt_level)
    assert _relax_ifs(compiled.build.mod) == 1  # the branch is taken at run time, not folded
    assert [s["name"] for s in compiled.inputs] == ["x", "sr"]
    for sr in (SR_ON, 8000):
        x = _x(seed=sr)
        feeds = {"x": x, "sr": np.array(sr, dtype=np.int64)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], _ort(model, feeds), rtol=RTOL, atol=ATOL)


def test_if_with_a_one_element_condition_and_fusion_inside_the_branches():
    """ONNX allows a [1] condition; each branch's code is fused and scheduled like straight-line code."""
    model = sr_switch_model(n=2, k=9, m=4, cond_shape=(1,))
    compiled = tvm_autoglm.compile(model, opt_level=3)
    # Our passes and FuseOps reach the outlined branches: packed weights, fused matmul + add + tanh.
    assert {"fused_matmul_packed_relu", "fused_matmul_packed_add1_fast_tanh"} <= set(compiled.kernels), compiled.kernels
    for sr in (SR_ON, 44100):
        feeds = {"x": _x((2, 9), seed=sr), "sr": np.array([sr], dtype=np.int64)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], _ort(model, feeds), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opt_level", [1, 3])
def test_nested_ifs_on_two_runtime_inputs_match_onnxruntime_on_every_path(opt_level):
    model = nested_switch_model()
    compiled = tvm_autoglm.compile(model, opt_level=opt_level)
    for mode, sr in ((True, SR_ON), (True, 8000), (False, SR_ON)):
        feeds = {"x": _x((4, 3), seed=sr), "mode": np.array(mode), "sr": np.array(sr, dtype=np.int64)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], _ort(model, feeds), rtol=RTOL, atol=ATOL, err_msg=f"mode={mode} sr={sr}")


def test_each_branch_keeps_its_own_work_in_a_function_of_its_own():
    """TVM's importer emits a branch's bindings before the If (both branches' matmuls ran on every
    call), and its memory planner reuses a true-branch storage in the false branch (segfault).
    frontend/if_branches.py keeps each branch's work inside, outlined into its own function."""
    import tvm
    from tvm import relax

    from tvm_autoglm.pipeline import build_relax

    mod = build_relax(sr_switch_model(), "cpu", 0).pre_fusion_mod

    def ops_in(expr):
        found = []
        relax.analysis.post_order_visit(expr, lambda e: found.append(e.op) if isinstance(e, relax.Call) else None)
        return found

    outside, branch_calls = [], []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.If):
                branch_calls += ops_in(binding.value.true_branch) + ops_in(binding.value.false_branch)
            else:
                outside += ops_in(binding.value)
    assert all(isinstance(op, tvm.ir.Op) and op.name != "relax.matmul" for op in outside), outside
    assert sorted(op.name_hint for op in branch_calls) == ["main_if1_else", "main_if1_then"]
    then_ops = [op.name for op in ops_in(mod["main_if1_then"].body)]
    else_ops = [op.name for op in ops_in(mod["main_if1_else"].body)]
    assert (then_ops, else_ops) == (["relax.matmul", "relax.nn.relu"], ["relax.matmul", "relax.add", "relax.tanh"])


@pytest.mark.parametrize("width", [5, 4])
def test_if_on_shapes_folds_away_with_static_input_shapes(width):
    model = shape_switch_model()
    compiled = tvm_autoglm.compile(model, opt_level=2, input_shapes={"x": [3, width]})
    assert "If" not in {n.op_type for n in compiled.build.onnx_model.graph.node}
    assert _relax_ifs(compiled.build.mod) == 0
    x = _x((3, width), seed=width)
    np.testing.assert_allclose(compiled.run(x=x)["y"], _ort(model, {"x": x}), rtol=RTOL, atol=ATOL)


def test_unsupported_op_inside_a_branch_is_reported_with_its_path():
    model = sr_switch_model()
    then_branch = next(a.g for a in model.graph.node[1].attribute if a.name == "then_branch")
    then_branch.node[1].op_type = "NoSuchOp"
    then_branch.node[1].domain = "custom.domain"
    from tvm_autoglm.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"custom\.domain\.NoSuchOp \(node 'sr_switch/then_branch/#1'\)"):
        tvm_autoglm.compile(model, opt_level=1)


@pytest.mark.parametrize("sr", [SR_ON, 8000])
def test_freeze_input_folds_the_if_and_drops_the_input(sr):
    model = sr_switch_model()
    compiled = tvm_autoglm.compile(model, opt_level=3, freeze_inputs={"sr": sr})
    assert _relax_ifs(compiled.build.mod) == 0
    assert "If" not in {n.op_type for n in compiled.build.onnx_model.graph.node}
    assert [s["name"] for s in compiled.inputs] == ["x"]
    assert compiled.manifest["frozen_inputs"] == [{"name": "sr", "dtype": "int64", "shape": [], "value": sr}]
    x = _x(seed=1)
    want = _ort(model, {"x": x, "sr": np.array(sr, dtype=np.int64)})
    np.testing.assert_allclose(compiled.run(x=x)["y"], want, rtol=RTOL, atol=ATOL)
    # given with exactly the frozen value: accepted; any other value: refused, naming both values
    np.testing.assert_allclose(compiled.run(x=x, sr=np.array(sr, dtype=np.int64))["y"], want, rtol=RTOL, atol=ATOL)
    with pytest.raises(InputError, match=rf"input 'sr' was frozen to {sr} at compile time .*; got 22050"):
        compiled.run(x=x, sr=np.array(22050, dtype=np.int64))


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"rate": 1}, r"freeze input\(s\) \['rate'\] are not inputs of the model"),
        ({"sr": 16000.5}, r"not exactly representable as int64"),
        ({"sr": [1, 2]}, r"2 value\(s\) given, the input's declared shape \[\] holds 1"),
        ({"sr": "abc"}, r"'abc' is not a int64 value"),
    ],
)
def test_freeze_input_refusals(values, needle):
    with pytest.raises(InputError, match=needle):
        tvm_autoglm.compile(sr_switch_model(), opt_level=0, freeze_inputs=values)


def test_freeze_input_parses_comma_lists_cast_to_the_input_dtype():
    from tvm_autoglm.freeze import freeze_inputs, parse_freeze_items

    model = make_model([helper.make_node("Cast", ["sr"], ["x_cast"], to=TP.FLOAT), helper.make_node("Add", ["x", "x_cast"], ["y"])],
                       [value_info("x", [3]), value_info("sr", ["n"], TP.INT32), value_info("on", [], TP.BOOL)], {"y": [3]},
                       ir_version=onnx.IR_VERSION)
    proto, records = freeze_inputs(model, parse_freeze_items(["sr=16000, 8000,-3", "on=true"]))
    assert records == [{"name": "sr", "dtype": "int32", "shape": [3], "value": [16000, 8000, -3]},
                       {"name": "on", "dtype": "bool", "shape": [], "value": True}]
    assert [i.name for i in proto.graph.input] == ["x"]
    with pytest.raises(InputError, match="not exactly representable as int32"):
        freeze_inputs(model, {"sr": [1 << 40]})
    for bad in ("sr", "sr=", "=3"):
        with pytest.raises(InputError, match="expected NAME=VALUE"):
            parse_freeze_items([bad])


def test_frozen_build_round_trips_through_export_cli_and_a_fresh_process(tmp_path):
    model_path = tmp_path / "sr.onnx"
    onnx.save(sr_switch_model(), model_path)
    so = tmp_path / "sr.so"
    cli("compile", "--model", model_path, "--output", so, "--optimize-level", "2", "--freeze-input", "sr=8000", "--quiet", check=True)
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["frozen_inputs"] == [{"name": "sr", "dtype": "int64", "shape": [], "value": 8000}]
    assert [s["name"] for s in manifest["inputs"]] == ["x"]
    x = _x(seed=5)
    want = _ort(sr_switch_model(), {"x": x, "sr": np.array(8000, dtype=np.int64)})
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from tvm_autoglm import runtime, load\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"session = runtime.load({str(so)!r})\n"
        "print(list(session.run(x=x)['y'].ravel()))\n"
        f"print(list(load({str(so)!r}).run(x=x, sr=np.array(8000))['y'].ravel()))\n"
        "try:\n"
        "    session.run(x=x, sr=np.array(16000))\n"
        "except Exception as err:\n"
        "    print('REFUSED', type(err).__name__, err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    for line in lines[:2]:
        np.testing.assert_allclose(np.array(eval(line), dtype=np.float32), want.ravel(), rtol=RTOL, atol=ATOL)
    assert lines[2].startswith("REFUSED InputError input 'sr' was frozen to 8000"), lines[2]
    assert "got 16000" in lines[2]
    # execute: the frozen input in the .npz with another value -> one line, exit 2
    np.savez(tmp_path / "bad.npz", x=x, sr=np.array(16000, dtype=np.int64))
    result = cli("execute", "--binary", so, "--input", tmp_path / "bad.npz")
    assert result.returncode == 2
    assert_clean_error(result, "input 'sr' was frozen to 8000", "got 16000")


def test_inspect_shows_the_frozen_input_and_drops_it_from_the_inputs(tmp_path):
    model_path = tmp_path / "sr.onnx"
    onnx.save(sr_switch_model(), model_path)
    info = json.loads(cli("inspect", "--model", model_path, "--freeze-input", "sr=16000", "--json", check=True).stdout)
    assert [s["name"] for s in info["inputs"]] == ["x"]
    assert info["frozen_inputs"] == [{"name": "sr", "dtype": "int64", "shape": [], "value": 16000}]
    assert {"op": "If", "count": 1, "supported": True} in info["ops"]


def test_bad_freeze_flag_is_a_user_error(tmp_path):
    model_path = tmp_path / "sr.onnx"
    onnx.save(sr_switch_model(), model_path)
    result = cli("compile", "--model", model_path, "--output", tmp_path / "o.so", "--freeze-input", "sr:8000")
    assert result.returncode == 2
    assert_clean_error(result, "bad --freeze-input 'sr:8000'")


def test_serve_codec_accepts_the_frozen_value_and_refuses_another():
    from tvm_autoglm.serve import codec

    specs = [{"name": "x", "shape": [1, 2], "dtype": "float32"}]
    frozen = [{"name": "sr", "dtype": "int64", "shape": [], "value": 8000}]
    arrays = codec.decode(b'{"inputs": {"x": [[1, 2]], "sr": 8000}}', "application/json", specs, frozen)
    assert list(arrays) == ["x"]
    with pytest.raises(InputError, match=r"input 'sr' was frozen to 8000 at compile time .*; got 16000"):
        codec.decode(b'{"inputs": {"x": [[1, 2]], "sr": 16000}}', "application/json", specs, frozen)
    with pytest.raises(InputError, match="unknown"):  # without the manifest's record it is just an unknown input
        codec.decode(b'{"inputs": {"x": [[1, 2]], "sr": 8000}}', "application/json", specs, None)


def test_bench_feeds_onnxruntime_the_frozen_value(tmp_path):
    """The ONNX model still takes the frozen input; bench --vs ort must give it the frozen value, not fail."""
    from tvm_autoglm.cli.cmd_bench import bench

    model_path = tmp_path / "sr.onnx"
    onnx.save(sr_switch_model(), model_path)
    so = tmp_path / "sr.so"
    tvm_autoglm.compile(model_path, opt_level=1, freeze_inputs={"sr": 8000}).export(so)
    result = bench(str(so), ["ort"], model=str(model_path), repeat=3, warmup=1, idle_wait=0.0, log=lambda *a: None)
    assert [row["name"] for row in result["candidates"]][1] == "onnxruntime"  # the old code refused: "wants input(s) ['sr']"
