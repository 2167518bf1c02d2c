"""Tiny zoo models from both torch exporters compile at O0 and O3 and match onnxruntime.

Tolerance: rtol 1e-4, atol 1e-4 in fp32. The absolute term is 1e-4 rather than
1e-5 because these graphs are deep (LayerNorm, softmax, 2-layer stacks) and TVM
and onnxruntime sum in different orders; errors seen are ~1e-6 relative.
"""

from __future__ import annotations

import pytest

from helpers import assert_close, ort_run

pytest.importorskip("torch")

import tvm_autoglm  # noqa: E402
from tvm_autoglm import zoo  # noqa: E402

SEQ = 16
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(scope="session")
def zoo_model():
    built = {}

    def get(name: str, exporter: str):
        key = (name, exporter)
        if key not in built:
            built[key] = zoo.cached(name, "tiny", SEQ, 1, exporter)
        return built[key]

    return get


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["bert", "gpt-neox", "resnet50"])
@pytest.mark.parametrize("opt_level", [0, 3])
def test_tiny_zoo_model_matches_onnxruntime(zoo_model, name, exporter, opt_level):
    path = zoo_model(name, exporter)
    inputs = zoo.example_inputs(name, "tiny", SEQ, 1)
    model = tvm_autoglm.compile(path, target="cpu", opt_level=opt_level, input_shapes=zoo.input_shapes(name, "tiny", SEQ, 1))
    expected = ort_run(path, inputs)
    actual = model.run(inputs)
    assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    assert model.manifest["opt_level"] == opt_level
    if opt_level == 0:
        assert "fuse_ops" not in model.manifest["passes"]
