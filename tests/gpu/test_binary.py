"""Reading CUDA binaries and TVM's library blob, checked against nvcc's and TVM's own output."""

from __future__ import annotations

import re

import pytest
import tvm
from tvm import relax

from conftest import cuda_device_present, nvcc_present
from tvm_autoglm.errors import CompileError
from tvm_autoglm.gpu import nvcc
from tvm_autoglm.gpu.binary import BinaryFormatError, CudaPayload, Image, LibraryBlob, binary_images
from tvm_autoglm.gpu.export import compile_blob, require_sass

KERNEL = 'extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {\n  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) y[i] += a * x[i];\n}\n'

needs_nvcc = pytest.mark.skipif(not nvcc_present(), reason="nvcc not found")


@needs_nvcc
@pytest.mark.parametrize(
    "arch,images",
    [
        ("sm_80", {Image("sass", "sm_80"), Image("ptx", "compute_80")}),
        ("sm_90a", {Image("sass", "sm_90a")}),
    ],
)
def test_fatbin_images_name_the_arch(arch, images):
    assert set(binary_images(nvcc.compile_fatbin(KERNEL, arch))) == images


def test_gencode_flags():
    assert nvcc.gencode_flags("sm_80") == ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_80,code=compute_80"]
    assert nvcc.gencode_flags("sm_90a") == ["-gencode", "arch=compute_90a,code=sm_90a"]
    assert nvcc.normalize_arch("8.6") == "sm_86"
    with pytest.raises(CompileError, match="not of the form"):
        nvcc.normalize_arch("ampere")


@needs_nvcc
def test_nvcc_error_is_one_compile_error():
    with pytest.raises(CompileError, match="nvcc failed compiling the kernels for sm_80: .*error"):
        nvcc.compile_fatbin("__global__ void broken( {", "sm_80")


def test_missing_nvcc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(nvcc, "find_nvcc", lambda: None)
    with pytest.raises(CompileError, match="CUDA targets need nvcc at build time"):
        nvcc.require_nvcc()


def test_not_a_binary_is_rejected():
    with pytest.raises(BinaryFormatError):
        binary_images(b"\x00" * 64)


def _tiny_cuda_executable():
    from tvm_autoglm.gpu import apply_gpu_default_schedules
    from tvm_autoglm.targets import load_target

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((8, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.softmax(relax.op.exp(x)))
        bb.emit_func_output(out)
    target = load_target("gpu-ampere").tvm_target()
    with target:  # in scope for codegen too: with a driver, TVM compiles the kernels there, for this arch
        mod = relax.get_pipeline("zero")(bb.get())
        return tvm.compile(apply_gpu_default_schedules(mod, target), target)


def _packed_blob(executable) -> bytes:
    from tvm.runtime import _ffi_api

    text = _ffi_api.ModulePackImportsToC(executable.mod, False, "")
    body = re.search(r"= \{(.*?)\};", text, re.S).group(1)
    return bytes.fromhex(re.sub(r"0x|[,\s]", "", body))


def test_library_blob_round_trips_byte_for_byte():
    """Our reader/writer against TVM's own serialisation: parse + serialize is the identity."""
    blob = _packed_blob(_tiny_cuda_executable())
    tree = LibraryBlob.parse(blob)
    assert tree.serialize() == blob
    cuda = [payload for kind, payload in tree.modules if kind == "cuda"]
    assert len(cuda) == 1
    module = CudaPayload.parse(cuda[0])
    if cuda_device_present():  # TVM compiled the kernels in tvm.compile (through our nvcc callback)
        assert module.fmt in ("cubin", "fatbin") and Image("sass", "sm_80") in binary_images(module.code)
    else:  # no driver: TVM keeps the source and the export compiles it
        assert module.fmt == "cuda" and b"__global__" in module.code
    assert module.serialize() == cuda[0]


def test_tensor_blob_is_the_c_array_blob_and_parses_without_copying_payloads():
    """The export takes the blob as bytes (``ModulePackImportsToTensor``), not as C text.

    The C text costs about six characters per byte of weights and made bert-large's GPU
    export run out of 24 GiB; the two routes must give the same bytes, and a memoryview
    parse must hand out views into the blob (the VM payload holds every weight), not copies.
    """
    import io

    from tvm.runtime import _ffi_api

    executable = _tiny_cuda_executable()
    blob = _ffi_api.ModulePackImportsToTensor(executable.mod).numpy()
    assert blob.tobytes() == _packed_blob(executable)
    tree = LibraryBlob.parse(memoryview(blob))
    payloads = [payload for kind, payload in tree.modules if kind != "_lib"]
    assert payloads and all(isinstance(p, memoryview) and p.obj is blob for p in payloads)
    stream = io.BytesIO()
    assert tree.write(stream) == blob.size
    assert stream.getvalue() == blob.tobytes()


@needs_nvcc
def test_compile_blob_swaps_source_for_sass():
    blob, compiled = compile_blob(_packed_blob(_tiny_cuda_executable()), "sm_80")
    assert compiled == (0 if cuda_device_present() else 1)  # with a driver, tvm.compile already did it
    (payload,) = [p for kind, p in LibraryBlob.parse(blob).modules if kind == "cuda"]
    module = CudaPayload.parse(payload)
    assert module.fmt in ("fatbin", "cubin") and module.fmt != "cuda"
    require_sass(module.code, "sm_80")
    with pytest.raises(CompileError, match="no SASS for sm_90a"):
        require_sass(module.code, "sm_90a")
