"""fp16 builds use tensor cores on both CUDA targets (dlight's Matmul tensorization).

Regression: dlight reads the arch with ``int("90a")`` semantics and treated sm_90a as
"no tensor cores", so Hopper fp16 matmuls fell back to SIMT code without any error.
"""

from __future__ import annotations

import pytest

from conftest import ARCH
from gpu_models import bert_layer


@pytest.mark.parametrize("target", list(ARCH))
def test_fp16_matmuls_are_tensorized(target):
    from tvm_autoglm.pipeline import build_executable, build_relax, schedule
    from tvm_autoglm.quantize import apply_quantization

    # every matmul extent must exceed 64 for dlight to tensorize
    build = apply_quantization(build_relax(bert_layer(seq=128, dim=128, ffn=256), target), "fp16")
    executable = build_executable(schedule(build), build)
    (cuda,) = executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda")
    source = cuda.inspect_source("")
    assert source.count("wmma::mma_sync") >= 4, "no tensor-core matmul in the generated CUDA"


def test_fp32_matmuls_stay_simt():
    """Tensor cores need fp16 operands here; an fp32 build must not claim them."""
    from tvm_autoglm.pipeline import build_executable, build_relax, schedule

    build = build_relax(bert_layer(seq=128, dim=128, ffn=256), "gpu-hopper")
    executable = build_executable(schedule(build), build)
    (cuda,) = executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda")
    assert "wmma::" not in cuda.inspect_source("")
