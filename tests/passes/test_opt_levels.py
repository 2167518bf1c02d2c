"""Whole-model checks of the opt levels on the tiny zoo models from both exporters.

- O2 has fewer kernels than O1 on the transformers (ResNet-50 exports arrive
  with BatchNorm already folded by torch, so O2 there equals O1: asserted <=);
- no batch_norm left in any CNN kernel at O2;
- attention is one fused kernel in every transformer at O2 and O3;
- outputs match onnxruntime at O1 and O2 (O0 and O3 are covered by
  tests/test_zoo_parity.py). Tolerance rtol 1e-4, atol 1e-4: the same as
  test_zoo_parity.py, for the same reason (deep graphs, different summation
  order; observed differences are ~1e-6).
"""

from __future__ import annotations

import pytest

from helpers import assert_close, ort_run

pytest.importorskip("torch")

import tvm_autoglm  # noqa: E402
from tvm_autoglm import zoo  # noqa: E402
from tvm_autoglm.pipeline import build_relax  # noqa: E402

SEQ = 16
EXPORTERS = ["torchscript", "dynamo"]
TRANSFORMERS = ["bert", "gpt-neox"]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name: str, exporter: str, level: int):
        key = (name, exporter, level)
        if key not in cache:
            path = zoo.cached(name, "tiny", SEQ, 1, exporter)
            cache[key] = build_relax(str(path), "cpu", level, zoo.input_shapes(name, "tiny", SEQ, 1))
        return cache[key]

    return get


def _attention_kernels(kernels):
    return [k for k in kernels if "softmax" in k and k.count("matmul") >= 2]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_o2_fewer_kernels_and_fused_attention(built, name, exporter):
    o1, o2 = built(name, exporter, 1), built(name, exporter, 2)
    assert len(o2.kernels) < len(o1.kernels)
    assert _attention_kernels(o1.kernels) == []
    assert len(_attention_kernels(o2.kernels)) == 1  # every layer calls the same kernel
    assert not any(k.startswith("softmax") or k.startswith("fused_softmax") for k in o2.kernels)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_o3_keeps_fused_attention(built, name, exporter):
    assert len(_attention_kernels(built(name, exporter, 3).kernels)) == 1


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_cnn_o2_has_no_batch_norm_kernel(built, exporter):
    o1, o2 = built("resnet50", exporter, 1), built("resnet50", exporter, 2)
    assert not any("batch_norm" in k for k in o2.kernels)
    assert len(o2.kernels) <= len(o1.kernels)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS + ["resnet50"])
@pytest.mark.parametrize("opt_level", [1, 2])
def test_parity_with_onnxruntime(name, exporter, opt_level):
    path = zoo.cached(name, "tiny", SEQ, 1, exporter)
    inputs = zoo.example_inputs(name, "tiny", SEQ, 1)
    model = tvm_autoglm.compile(path, target="cpu", opt_level=opt_level, input_shapes=zoo.input_shapes(name, "tiny", SEQ, 1))
    assert_close(model.run(inputs), ort_run(path, inputs), rtol=1e-4, atol=1e-4)
