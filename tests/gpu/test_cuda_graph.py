"""CUDA graphs: GPU builds capture ``main``'s static kernels into a graph (target switch ``cuda_graph``).

The build-side tests run anywhere (no GPU, no nvcc: they read the VM's instruction text).
The replay test needs a CUDA device: a captured graph must still read each call's new inputs,
so three calls with different inputs must each match onnxruntime (fp32 tolerance of
test_gpu_parity: rtol 1e-4, atol 1e-4).
"""

from __future__ import annotations

import json

import pytest

from conftest import cuda_device_present

CAPTURE = "vm.builtin.cuda_graph.run_or_capture"


def _target_file(tmp_path, name: str, cuda_graph: bool | None) -> str:
    from tvm_autoglm.targets import targets_dir

    data = json.loads((targets_dir() / f"{name}.json").read_text())
    if cuda_graph is None:
        data.pop("cuda_graph", None)
    else:
        data["cuda_graph"] = cuda_graph
    path = tmp_path / f"{name}-{cuda_graph}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("setting, captured", [(True, True), (None, True), (False, False)])
def test_gpu_build_captures_a_cuda_graph_unless_switched_off(tmp_path, gpu_onnx, setting, captured):
    import tvm_autoglm

    model = tvm_autoglm.compile(gpu_onnx["bert"], target=_target_file(tmp_path, "gpu-hopper", setting))
    text = model._executable.as_text()
    assert (CAPTURE in text) is captured
    assert model.manifest["target"].get("cuda_graph", True) is captured


def test_cpu_build_never_captures(gpu_onnx):
    import tvm_autoglm

    assert CAPTURE not in tvm_autoglm.compile(gpu_onnx["bert"], target="cpu")._executable.as_text()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_device_present(), reason="needs a CUDA device")
def test_replayed_graph_reads_each_calls_inputs(gpu_artifact, gpu_onnx):
    import tvm

    import tvm_autoglm
    from helpers import assert_close, ort_run

    major = int(str(tvm.cuda(0).compute_version).split(".")[0])
    loaded = tvm_autoglm.load(gpu_artifact("gpu-hopper" if major == 9 else "gpu-ampere", "bert"))
    assert loaded.manifest["target"]["cuda_graph"] is True
    for seed in (11, 12, 11):
        inputs = loaded.example_inputs(seed=seed)
        assert_close(loaded.run(inputs), ort_run(gpu_onnx["bert"], inputs), rtol=1e-4, atol=1e-4)
