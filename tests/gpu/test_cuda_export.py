"""CUDA targets build here without a GPU: the .so carries SASS for the target arch, every kernel
runs on GPU threads, the manifest names the target, and running it without a GPU fails cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ARCH, cuda_device_present
from zoo_fixtures import zoo_build, zoo_dir  # noqa: F401  (fixtures)
from tvm_autoglm.gpu import embedded_cuda_modules, unbound_kernels
from tvm_autoglm.gpu.binary import LibraryBlob, read_library_blob

CASES = [(target, model) for target in ARCH for model in ("bert", "cnn")]


@pytest.mark.parametrize("target,model", CASES)
def test_library_carries_sass_for_the_target_arch(gpu_artifact, target, model):
    modules = embedded_cuda_modules(gpu_artifact(target, model))
    assert len(modules) == 1, modules
    module = modules[0]
    # "fatbin" when the export compiled the source (no driver here); "cubin" when TVM did, in
    # tvm.compile, through our nvcc callback (a machine with a driver). Either way, our nvcc's fatbin.
    assert module["format"] in ("fatbin", "cubin"), "the library must hold compiled GPU code, not CUDA source"
    sass = sorted(image.arch for image in module["images"] if image.kind == "sass")
    assert sass == [ARCH[target]]
    ptx = sorted(image.arch for image in module["images"] if image.kind == "ptx")
    # sm_80 also carries compute_80 PTX for newer GPUs; sm_90a PTX could run nowhere else.
    assert ptx == (["compute_80"] if target == "gpu-ampere" else [])


@pytest.mark.parametrize("target,model", CASES)
def test_manifest_names_the_target_and_every_kernel_is_default_scheduled(gpu_artifact, target, model):
    manifest = json.loads(gpu_artifact(target, model).with_suffix(".json").read_text())
    assert manifest["target"]["name"] == target
    assert manifest["target"]["kind"] == "cuda"
    assert manifest["target"]["tvm"]["arch"] == ARCH[target]
    assert any(f"fatbin for {ARCH[target]}" in note for note in manifest["notes"]), manifest["notes"]
    tuning = manifest["tuning"]
    assert tuning["plain_kernels"] == 0
    assert tuning["default_scheduled_kernels"] + tuning["tuned_kernels"] == len(manifest["kernels"]) > 0


def test_library_module_tree_is_host_then_cuda(gpu_artifact):
    """The blob TVM loads: VM executable, the host library, one CUDA module (what the CUDA loader reads)."""
    blob = LibraryBlob.parse(read_library_blob(gpu_artifact("gpu-ampere", "bert")))
    assert [kind for kind, _ in blob.modules] == ["relax.VMExecutable", "_lib", "cuda"]
    assert blob.indptr == [0, 1, 2, 2] and blob.children == [1, 2]


@pytest.mark.parametrize("target", list(ARCH))
@pytest.mark.parametrize("model", ["bert", "cnn"])
def test_every_kernel_is_bound_to_gpu_threads(gpu_onnx, target, model):
    from tvm_autoglm.pipeline import build_relax, kernel_names, schedule

    build = build_relax(gpu_onnx[model], target)
    scheduled = schedule(build)
    assert len(kernel_names(scheduled.mod)) >= 5
    assert unbound_kernels(scheduled.mod) == []


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_execute_without_a_gpu_is_a_clean_one_line_error(gpu_artifact):
    from helpers import assert_clean_error, cli

    so = gpu_artifact("gpu-hopper", "cnn")  # built through `auto-glm compile`
    result = cli("execute", "--binary", so)
    assert result.returncode == 2
    line = assert_clean_error(result, "target gpu-hopper needs a CUDA device; none found")
    assert line == "auto-glm: error: target gpu-hopper needs a CUDA device; none found"


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_load_without_a_gpu_raises_device_error(gpu_artifact):
    import tvm_autoglm
    from tvm_autoglm.errors import DeviceError

    with pytest.raises(DeviceError, match="target gpu-ampere needs a CUDA device; none found"):
        tvm_autoglm.load(gpu_artifact("gpu-ampere", "cnn"))


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_fresh_process_reaches_the_cuda_loader(gpu_artifact):
    """dlopen + blob parsing succeed in a fresh process; only the absent CUDA runtime stops the load."""
    code = "import sys, tvm\ntry:\n    tvm.runtime.load_module(sys.argv[1])\nexcept Exception as e:\n    print(str(e).strip().splitlines()[-1])\n"
    out = subprocess.run([sys.executable, "-c", code, str(gpu_artifact("gpu-ampere", "bert"))], capture_output=True, text=True, timeout=300)
    assert "created using {cuda} but a loader of that name is not registered" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["bert", "gpt-neox", "resnet50"])
def test_every_block_of_every_zoo_kernel_runs_on_gpu_threads(zoo_build, name):
    """Whole kernels *and* each block in them: a rule that binds one block of two leaves the other as host code."""
    import tvm

    from tvm_autoglm.gpu.schedules import unbound_blocks
    from tvm_autoglm.pipeline import build_relax, schedule

    scheduled = schedule(build_relax(zoo_build(name, "dynamo"), "gpu-hopper"))
    partial = {gv.name_hint: unbound_blocks(f) for gv, f in scheduled.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert len(partial) >= 5
    assert {k: v for k, v in partial.items() if v} == {}
