"""Models compiled for npu-sim: parity with onnxruntime, partition, counters, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

import tvm_autoglm
from tvm_autoglm.npu.counters import for_module
from tvm_autoglm.npu.partition import npu_ops, offload
from tvm_autoglm.npu.report import collect

from .models import reference, tiny_cnn, transformer_block

# The NPU rounds matmul operands to fp16 (accumulating in fp32): relative error
# per product ~2^-11, summed over K <= 128 terms of O(1) values here.
RTOL, ATOL = 1e-2, 1e-2


@pytest.fixture(scope="module")
def transformer():
    model = transformer_block()
    return model, tvm_autoglm.compile(model, target="npu-sim", opt_level=3)


@pytest.fixture(scope="module")
def cnn():
    model = tiny_cnn()
    return model, tvm_autoglm.compile(model, target="npu-sim", opt_level=3)


def _check_parity(model, compiled, seed=0):
    x = np.random.default_rng(seed).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    got = compiled.run(x=x)
    want = reference(model, {"x": x})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL)
    return x


def test_transformer_matches_onnxruntime(transformer):
    model, compiled = transformer
    assert [k for k in compiled.kernels if k.startswith("npu_")], "no kernel went to the NPU"
    _check_parity(model, compiled)


def test_gelu_epilogue_runs_on_the_npu():
    model = transformer_block(activation="gelu")
    compiled = tvm_autoglm.compile(model, target="npu-sim", opt_level=2)
    assert any(k.startswith("npu_matmul_bias_gelu") for k in compiled.kernels), compiled.kernels
    _check_parity(model, compiled, seed=3)


# tiny_cnn(): conv 3->8 3x3 on 8x8 (im2col: 2 images x 64 pixels x 8 out x 27), Gemm 2x128x40, Gemm 2x40x10
CNN_NPU_MACS = 2 * 64 * 8 * 27 + 2 * 128 * 40 + 2 * 40 * 10


def test_cnn_matches_onnxruntime_and_pooling_stays_on_host(cnn):
    model, compiled = cnn
    _check_parity(model, compiled)
    assert sorted(k for k in compiled.kernels if k.startswith("npu_")) == ["npu_conv2d_bias_relu_2", "npu_matmul_bias_1", "npu_matmul_bias_relu_0"]
    assert "max_pool2d" in compiled.kernels
    notes = "\n".join(compiled.manifest["tuning"]["npu"])
    assert "HOST max_pool2d" in notes and "NPU  npu_conv2d_bias_relu_2: conv2d+bias+relu (im2col matmul)" in notes


def test_counted_macs_equal_macs_of_offloaded_ops(cnn):
    model, compiled = cnn
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    report = collect(compiled._session, {"x": x})
    assert report["macs"] == CNN_NPU_MACS
    assert report["macs"] == sum(op["macs"] for op in npu_ops(compiled.build.mod))
    assert report["macs_issued"] >= report["macs"]  # padded tiles count as issued, not useful
    assert report["errors"] == 0
    assert {op["kernel"] for op in report["ops"]} == {"npu_conv2d_bias_relu_2", "npu_matmul_bias_1", "npu_matmul_bias_relu_0"}
    assert sum(op["cycles"] for op in report["ops"]) == report["total_cycles"]
    host = {k["kernel"] for k in report["host_fallback"]["kernels"]}
    assert "max_pool2d" in host and not any(k.startswith("npu_") for k in host)


def test_unsupported_ops_stay_on_host():
    grouped = relax.const(np.ones((4, 2, 3, 3), np.float32))
    bb = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType([4, 16], "int32")), relax.Var("w", relax.TensorType([16, 8], "int32"))
    y, v = relax.Var("y", relax.TensorType([4, 16], "float32")), relax.Var("v", relax.TensorType([16, 8], "float32"))
    img = relax.Var("img", relax.TensorType([1, 4, 6, 6], "float32"))
    with bb.function("main", [x, w, y, v, img]):
        with bb.dataflow():
            a = bb.emit(relax.op.matmul(x, w))
            b = bb.emit(relax.op.matmul(y, v))
            c = bb.emit(relax.op.nn.conv2d(img, grouped, groups=2))
            out = bb.emit_output(relax.Tuple([a, b, c]))
        bb.emit_func_output(out)
    mod, summary = offload(bb.get())
    ops = [b.value.op.name for b in mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert ops.count("relax.matmul") == 1 and ops.count("relax.call_tir") == 1 and ops.count("relax.nn.conv2d") == 1
    assert summary["kept_on_host"] == [{"reason": "conv layout/groups/dilation", "count": 1}, {"reason": "dtypes int32xint32->int32", "count": 1}]
    assert [op["dtype"] for op in summary["npu_ops"]] == ["float32"]


def test_exported_model_has_own_counters_and_report_cli(cnn, tmp_path):
    """Export, then `auto-glm execute --report` in a fresh process."""
    model, compiled = cnn
    path = compiled.export(tmp_path / "cnn.so")
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    cli = [sys.executable, "-m", "tvm_autoglm", "execute", "--binary", str(path), "--input", str(tmp_path / "x.npz"),
           "--output", str(tmp_path / "y.npz"), "--report", str(tmp_path / "npu.json")]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "npu.json").read_text())
    html = (tmp_path / "npu.html").read_text()
    assert report["macs"] == CNN_NPU_MACS and report["total_cycles"] > 0 and "<table>" in html and "npu_matmul_bias_relu_0" in html
    assert 0 < report["mac_utilization"] <= 1
    assert report["simulated_latency_ms"] == pytest.approx(report["total_cycles"] / 1e6)
    assert report["dma_bytes"]["weight"] > 0 and report["scratchpad_peak_bytes"]["accumulator"] > 0
    assert 0 < report["host_fallback"]["share_of_calls"] < 1
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["y"], reference(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)

    # in this process: the loaded copy counts its own runs, the shared simulator does not see them
    loaded = tvm_autoglm.load(path)
    own, shared = for_module(loaded._session.module), for_module(None)
    own.reset()
    before = shared.snapshot()["total_cycles"]
    loaded.run(x=x)
    assert own.snapshot()["macs"] == CNN_NPU_MACS
    assert shared.snapshot()["total_cycles"] == before


def test_glm_package_report(transformer, tmp_path):
    model, compiled = transformer
    path = compiled.export(tmp_path / "tf.glm")
    loaded = tvm_autoglm.load(path)
    x = np.random.default_rng(6).standard_normal((1, 8, 32)).astype(np.float32)
    report = collect(loaded._session, {"x": x})
    assert report["macs"] == sum(op["macs"] for op in npu_ops(compiled.build.mod)) > 0


def _build_and_run(mod, *args):
    mod = relax.get_pipeline("zero")(mod)
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args])


def test_int8_matmul_through_tvm_is_bit_exact():
    """int8 x int8 -> int32 with a bias, compiled by TVM and executed by the simulator."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (70, 45), dtype=np.int8)
    bias = rng.integers(-3000, 3000, (45,), dtype=np.int32)
    x = rng.integers(-128, 128, (3, 37, 70), dtype=np.int8)

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType([3, 37, 70], "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            mm = bb.emit(relax.op.matmul(xv, relax.const(w), out_dtype="int32"))
            out = bb.emit_output(relax.op.add(mm, relax.const(bias)))
        bb.emit_func_output(out)
    mod, summary = offload(bb.get())
    assert [op["dtype"] for op in summary["npu_ops"]] == ["int8"] and summary["npu_ops"][0]["bias"]
    from tvm_autoglm.npu import build

    build.global_library()
    got = _build_and_run(mod, x).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int32) @ w.astype(np.int32) + bias)


def _dense_model(m=64, k=256, n=512):
    from _onnx_builders import make_model
    from onnx import helper, numpy_helper

    w = np.random.default_rng(8).standard_normal((k, n)).astype(np.float32) * 0.1
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [m, k]}, {"y": [m, n]}, [numpy_helper.from_array(w, "w")], name="dense")


def test_compiled_model_uses_configured_cores():
    from tvm_autoglm.npu.settings import with_npu
    from tvm_autoglm.targets import load_target

    model = _dense_model()
    x = np.random.default_rng(9).standard_normal((64, 256)).astype(np.float32)
    base = load_target("npu-sim")
    cycles, outputs = {}, {}
    for cores in (1, 4):
        compiled = tvm_autoglm.compile(model, target=with_npu(base, cores=cores), opt_level=1)
        report = collect(compiled._session, {"x": x})
        assert {op["cores"] for op in report["ops"]} == {cores}
        cycles[cores], outputs[cores] = report["total_cycles"], compiled.run(x=x)["y"]
    assert cycles[4] < cycles[1] / 2.5
    np.testing.assert_array_equal(outputs[1], outputs[4])  # same blocks, same arithmetic, other cores
    np.testing.assert_allclose(outputs[1], reference(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)


def test_report_refuses_a_cpu_artifact():
    from tvm_autoglm.errors import AutoGLMError

    compiled = tvm_autoglm.compile(_dense_model(16, 32, 16), target="cpu", opt_level=1)
    with pytest.raises(AutoGLMError, match="npu-sim"):
        collect(compiled._session, {"x": np.zeros((16, 32), np.float32)})
