"""--quantize int8|auto on ONNX ``Gemm`` (the Hugging Face ``Conv1D`` export of GPT-2's linear layers).

TVM imports ``Gemm`` as ``matmul(alpha * A, B or B^T) + beta * C``, a matmul with a constant
weight like any other. GPT-2's export reshapes the activation to 2-D, runs the Gemm and
reshapes back; ``fuse_epilogue`` used to move that matmul + bias + reshape into a composite
function the int8 rewrite does not look into, so only the LM head (or nothing) was quantized.

Tolerance against onnxruntime fp32: max |got - ref| <= 3e-2 * max |ref|. Dynamic int8 rounds
the activation to a step of max|x|/127 per tensor and each weight column to max|w|/127, i.e.
up to 0.4% of each operand's range per element; over K = 24..48 random terms the errors
mostly cancel (measured 0.3-0.9% of the output's scale), 3% leaves room without hiding a
layer left fp32 (checked through the manifest) or a wrong bias/alpha/beta (errors of 10%+).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper


import tvm_autoglm  # noqa: E402
from _onnx_builders import make_model  # noqa: E402
from passes.passes_helpers import run_ort  # noqa: E402

REL_TOL = 3e-2
K, N, ROWS = 24, 40, 7


def _gemm_model(trans_b: int, alpha: float, beta: float, bias_shape, reshaped: bool):
    """x -> [reshape to 2-D] -> Gemm(W constant, C constant) -> [reshape back], seeded."""
    rng = np.random.default_rng(trans_b * 7 + int(alpha * 3) + int(beta * 5) + len(bias_shape or ()))
    inits = {"w": rng.standard_normal((N, K) if trans_b else (K, N)) / 5}
    gemm_inputs = ["a", "w"]
    if bias_shape is not None:
        inits["c"] = rng.standard_normal(bias_shape)
        gemm_inputs.append("c")
    nodes = [helper.make_node("Gemm", gemm_inputs, ["g"], transA=0, transB=trans_b, alpha=alpha, beta=beta)]
    if reshaped:  # GPT-2: [1, S, K] -> [S, K] -> Gemm -> [1, S, N]
        inits["to2d"], inits["to3d"] = np.array([ROWS, K]), np.array([1, ROWS, N])
        nodes = [helper.make_node("Reshape", ["x", "to2d"], ["a"]), *nodes, helper.make_node("Reshape", ["g", "to3d"], ["y"])]
        model = make_model(nodes, {"x": [1, ROWS, K]}, {"y": [1, ROWS, N]}, {k: v for k, v in inits.items() if not k.startswith("to")})
        from onnx import numpy_helper

        for name in ("to2d", "to3d"):
            model.graph.initializer.append(numpy_helper.from_array(inits[name].astype(np.int64), name))
        return model, [1, ROWS, K]
    nodes[0].input[0] = "x"
    nodes[0].output[0] = "y"
    return make_model(nodes, {"x": [ROWS, K]}, {"y": [ROWS, N]}, inits), [ROWS, K]


VARIANTS = [
    # (transB, alpha, beta, bias shape, reshaped like GPT-2)
    (0, 1.0, 1.0, (N,), True),  # the Conv1D export exactly
    (1, 1.0, 1.0, (1, N), True),
    (0, 0.5, 2.0, (1, N), False),
    (1, 2.0, 0.5, (N,), False),
    (1, 1.0, 1.0, (), False),  # scalar bias
    (0, 1.5, 1.0, None, True),  # no bias
]


@pytest.mark.parametrize("mode", ["int8", "auto"])
@pytest.mark.parametrize("trans_b,alpha,beta,bias_shape,reshaped", VARIANTS)
def test_gemm_is_quantized_and_matches_onnxruntime(mode, trans_b, alpha, beta, bias_shape, reshaped):
    model, x_shape = _gemm_model(trans_b, alpha, beta, bias_shape, reshaped)
    x = np.random.default_rng(11).standard_normal(x_shape).astype("float32")
    (ref,) = run_ort(model, {"x": x})
    compiled = tvm_autoglm.compile(model, "cpu-x86-avx2", 3, quantize=mode)
    assert [row["precision"] for row in compiled.manifest["quantization"]["layers"]] == ["int8"]
    got = compiled.run(x=x)["y"]
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert err <= REL_TOL, err
    assert err > 0.0  # really int8 (fp32 would agree to ~1e-7)


def _tiny_gpt2(path: Path) -> Path:
    """GPT-2 (2 layers, 64 wide, 4 heads, vocab 1000), seeded, exported by torch.onnx (dynamo)."""
    from tvm_autoglm.zoo._torch import export, randomize_1d, require_torch, seeded

    torch = require_torch()
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, use_cache=False,
                                     attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, bos_token_id=0, eos_token_id=0)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = transformers.GPT2LMHeadModel(config)

        def forward(self, input_ids):
            return self.lm(input_ids=input_ids, use_cache=False).logits

    with seeded(0):
        module = Logits().eval()
        randomize_1d(module, 0)
    export(module, (torch.zeros((1, 16), dtype=torch.int64),), ["input_ids"], ["logits"], "dynamo", path)
    return path


@pytest.mark.slow
def test_gpt2_quantize_auto_matches_onnxruntime(tmp_path):
    """GPT-2's Gemm layers are all found (8 Gemm + the LM head); logits cosine >= 0.99 with int8,
    and the fp32 build of the same model equal to onnxruntime within 1e-4 of the logits' scale."""
    import onnxruntime as ort

    pytest.importorskip("torch")
    model = _tiny_gpt2(tmp_path / "gpt2.onnx")
    ids = np.random.default_rng(0).integers(0, 1000, (1, 16)).astype("int64")
    (ref,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})
    shapes = {"input_ids": [1, 16]}
    fp32 = tvm_autoglm.compile(str(model), "cpu-x86-avx2", 3, input_shapes=shapes).run(input_ids=ids)["logits"]
    assert np.abs(fp32 - ref).max() <= 1e-4 * np.abs(ref).max()
    auto = tvm_autoglm.compile(str(model), "cpu-x86-avx2", 3, input_shapes=shapes, quantize="auto")
    layers = auto.manifest["quantization"]["layers"]
    assert len(layers) == 9, layers
    assert sum(row["precision"] == "int8" for row in layers) >= 1
    got = auto.run(input_ids=ids)["logits"].ravel().astype("float64")
    cos = got @ ref.ravel() / (np.linalg.norm(got) * np.linalg.norm(ref))
    assert cos >= 0.99, cos
