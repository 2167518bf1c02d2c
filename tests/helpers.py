"""Small shared tools for tests: hand-built ONNX models, the onnxruntime reference, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from _onnx_builders import make_model, value_info
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
FP32_RTOL = 1e-4
FP32_ATOL = 1e-5


def mlp_model(batch: int | str = 2, features: int = 16, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul+Add -> Relu -> MatMul+Add -> Softmax: two inputs (x, and a float scale) to exercise input order."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype("float32"), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype("float32"), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 8)).astype("float32"), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("Mul", ["h2", "scale"], ["h3"], name="scale_mul"),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="fc2"),
        helper.make_node("Add", ["h4", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    return make_model(nodes, {"x": [batch, features], "scale": [1]}, {"logits": [batch, 8], "probs": [batch, 8]}, [w1, b1, w2, b2],
                      name="mlp", check=True)


def token_model(seq: int = 8, vocab: int = 50, dim: int = 16, seed: int = 1, static: bool = False) -> onnx.ModelProto:
    """int64 token ids -> Gather embedding -> LayerNorm: an integer input and a float output."""
    rng = np.random.default_rng(seed)
    table = numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype("float32"), "embedding")
    gamma = numpy_helper.from_array(rng.standard_normal(dim).astype("float32"), "gamma")
    beta = numpy_helper.from_array(rng.standard_normal(dim).astype("float32"), "beta")
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["emb"], name="embed"),
        helper.make_node("LayerNormalization", ["emb", "gamma", "beta"], ["hidden"], name="ln", axis=-1, epsilon=1e-5),
    ]
    return make_model(nodes, [value_info("input_ids", [1, seq] if static else ["batch", "seq"], TensorProto.INT64)],
                      {"hidden": [1, seq, dim] if static else ["batch", "seq", dim]}, [table, gamma, beta], name="tokens", check=True)


def ort_run(model: onnx.ModelProto | str | Path, inputs: dict) -> dict:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def assert_close(actual: dict, expected: dict, rtol: float = FP32_RTOL, atol: float = FP32_ATOL) -> None:
    assert list(actual) == list(expected), f"output names differ: {list(actual)} vs {list(expected)}"
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol, err_msg=f"output {name}")


def cli(*args, check: bool = False, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m tvm_autoglm ARGS`` in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "tvm_autoglm", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"auto-glm {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: non-zero exit, one 'auto-glm: error:' line naming the problem, no traceback."""
    assert result.returncode != 0, f"expected failure, got 0:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("auto-glm: error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def conv_model(channels: int = 4, size: int = 8, seed: int = 2) -> onnx.ModelProto:
    """Conv(+bias) -> BatchNormalization -> Relu -> GlobalAveragePool: the CNN idioms in miniature."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype("float32"), "w"),
        numpy_helper.from_array(rng.standard_normal(channels).astype("float32"), "b"),
        numpy_helper.from_array(rng.standard_normal(channels).astype("float32"), "gamma"),
        numpy_helper.from_array(rng.standard_normal(channels).astype("float32"), "beta"),
        numpy_helper.from_array(rng.standard_normal(channels).astype("float32"), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, channels).astype("float32"), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["pooled"], name="pool"),
    ]
    return make_model(nodes, {"image": [1, 3, size, size]}, {"pooled": [1, channels, 1, 1]}, inits, name="cnn", check=True)


def relax_calls(mod, op_name: str) -> list:
    """The calls to ``op_name`` (e.g. "relax.nn.conv2d") in ``mod["main"]``, in post order."""
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == op_name:
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found
