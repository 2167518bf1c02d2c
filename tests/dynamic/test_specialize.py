"""``--specialize``: static variants of main inside a dynamic build, called by exact shape.

Tolerances: fp32, rtol 1e-4 / atol 1e-5 against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FP32_ATOL, FP32_RTOL, assert_close, mlp_model, ort_run

import tvm_autoglm
from tvm_autoglm.errors import AutoGLMError, InputError
from tvm_autoglm.specialize import parse_specialize, pick_function, variants


def _inputs(batch: int) -> dict:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32), "scale": np.array([0.5], np.float32)}


@pytest.fixture(scope="module")
def specialised():
    proto = mlp_model(batch="batch")
    return proto, tvm_autoglm.compile(proto, "cpu", 3, dynamic_dims={"batch": (1, 32)}, specialize={"batch": [4, 12]})


def test_variants_listed_and_dispatched_by_exact_shape(specialised):
    proto, model = specialised
    assert model.manifest["specializations"] == [
        {"function": "main__batch_4", "dims": {"batch": 4}},
        {"function": "main__batch_12", "dims": {"batch": 12}},
    ]
    session = model._session
    for batch, function in ((4, "main__batch_4"), (12, "main__batch_12"), (5, "main"), (32, "main")):
        inputs = _inputs(batch)
        assert session.function_for(session._checked(inputs)) == function
        assert_close(model.run(inputs), ort_run(proto, inputs), FP32_RTOL, FP32_ATOL)


def test_variants_get_static_kernels(specialised):
    """The variants' matmuls have numeric extents (static kernels); main keeps symbolic-row ones
    (packed too since symbolic rows are tiled: schedule_rules/symbolic_rows.py)."""
    import tvm
    from tvm import tirx

    _, model = specialised
    packed = [k for k in model.kernels if "matmul_packed" in k]
    assert packed, model.kernels

    def symbolic(func) -> bool:
        return any(not isinstance(d, tirx.IntImm) for p in func.params if hasattr(p, "shape") for d in p.shape)

    kinds = {symbolic(f) for gv, f in model.build.mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "matmul_packed" in gv.name_hint}
    assert kinds == {True, False}, kinds  # static kernels for the variants, symbolic ones for main


def test_parse_and_check_specialize():
    assert parse_specialize(["seq=128,256", "seq=256,64"]) == {"seq": [128, 256, 64]}
    assert variants({"seq": [256, 128]}, {"seq": (1, 512)}) == [{"seq": 128}, {"seq": 256}]
    assert len(variants({"seq": [8, 16], "batch": [1, 2]}, {"seq": (1, 16), "batch": (1, 4)})) == 4
    with pytest.raises(AutoGLMError, match="bad --specialize"):
        parse_specialize(["seq"])
    with pytest.raises(InputError, match=r"\[600\] outside the range 1..512"):
        variants({"seq": [128, 600]}, {"seq": (1, 512)})
    with pytest.raises(InputError, match="not a symbolic dim of this build"):
        variants({"sequence": [128]}, {"seq": (1, 512)})


def test_pick_function_needs_every_dim_equal():
    manifest = {"specializations": [{"function": "main__batch_2__seq_8", "dims": {"batch": 2, "seq": 8}}]}
    assert pick_function(manifest, {"batch": 2, "seq": 8}) == "main__batch_2__seq_8"
    assert pick_function(manifest, {"batch": 2, "seq": 9}) == "main"
    assert pick_function({}, {"seq": 8}) == "main"


def test_specialize_on_a_static_build_is_refused():
    with pytest.raises(InputError, match="not a symbolic dim"):
        tvm_autoglm.compile(mlp_model(batch=2), "cpu", 1, specialize={"batch": [2]})


def test_timing_harness_times_the_variant_run_would_call(specialised, tmp_path, monkeypatch):
    """``bench``/``ab`` time a dynamic build through ``session_candidate`` / ``tvm_candidate``: they
    used to check inputs against the raw specs (a KeyError on the symbolic dim) and always call
    ``main``; they must check like ``run`` and time the same variant ``run`` dispatches to."""
    from tvm_autoglm.measure.candidates import tvm_candidate
    from tvm_autoglm.measure.harness import session_candidate
    from tvm_autoglm.runtime.session import Session

    proto, model = specialised
    path = tmp_path / "dyn.so"
    model.export(str(path))
    chosen = []
    real = Session.function_for
    monkeypatch.setattr(Session, "function_for", lambda self, arrays: chosen.append(real(self, arrays)) or chosen[-1])
    for batch, function in ((12, "main__batch_12"), (5, "main")):
        inputs = _inputs(batch)
        for prepare in (lambda: session_candidate("ours", model, inputs), lambda: tvm_candidate(str(path), inputs)):
            chosen.clear()
            prepared = prepare()  # the timed function is picked once, when the candidate is prepared
            prepared.candidate.run()
            assert chosen == [function]
            assert_close(prepared.outputs(), ort_run(proto, inputs), FP32_RTOL, FP32_ATOL)
