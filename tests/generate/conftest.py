"""Tiny causal LMs with a KV cache (zoo ``--with-cache``) and their compiled generators, built once per session.

The generators use a small max context (80) and prefill chunk (16) so that compiles take
seconds; 64 new tokens after a 7-token prompt fill 71 of the 80 slots.
"""

from __future__ import annotations

import pytest

from lm_cases import MAX_CONTEXT, PREFILL_CHUNK


@pytest.fixture(scope="session")
def lm_onnx(workdir):
    """arch -> path of the tiny zoo model with cache (exported on first use)."""
    from tvm_autoglm.zoo import causal_lm

    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = causal_lm.export(arch, "tiny", workdir / f"{arch}-tiny-cache.onnx", seed=0)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def generator(lm_onnx):
    """arch -> CompiledModel built with generate=True (compiled on first use)."""
    import tvm_autoglm

    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = tvm_autoglm.compile(lm_onnx(arch), generate=True, max_context=MAX_CONTEXT, prefill_chunk=PREFILL_CHUNK)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def reference(lm_onnx):
    """arch -> OrtStepper (onnxruntime with its own cache loop)."""
    from tvm_autoglm.generate.reference import OrtStepper

    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = OrtStepper(lm_onnx(arch))
        return built[arch]

    return get
