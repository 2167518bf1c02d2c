"""Differential testing against onnxruntime (``tvm_autoglm.testing.difftest``).

The seeded subset below is the fast part of the campaign that runs in ``make test``:
30 cases (three per op family), each built at O3 and at one of O0/O1/O2 (rotating with
the index, so each level sees every family) for the host and run, and compiled
for cpu-x86-avx2 and cpu-x86-avx512 (the one the host supports is run too). Tolerance:
``difftest.RTOL`` x max|onnxruntime output| + ``difftest.ATOL``. The long campaign is
``python -m tvm_autoglm.testing.difftest --count 2000 --seed 0``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _onnx_builders import make_model
from onnx import helper

from tvm_autoglm.testing import difftest
from tvm_autoglm.testing.cases import FAMILIES, make_case
from tvm_autoglm.testing.isolation import run_isolated

SEED = 0
SUBSET = range(30)
#: cases failing now for a known reason another branch fixes; remove the mark when it XPASSes
KNOWN: dict[int, str] = {}  # index -> reason, for a known failure marked xfail(strict=True) until fixed


@pytest.fixture(scope="module")
def subset_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("difftest")
    return difftest.run_campaign(0, SEED, indices=SUBSET, opt_levels=_levels, out_dir=out, timeout_per_case=240)


def _levels(index: int) -> set[int]:
    return {index % 3, 3}


@pytest.mark.parametrize("index", [pytest.param(i, marks=pytest.mark.xfail(strict=True, reason=KNOWN[i])) if i in KNOWN else i for i in SUBSET])
def test_seeded_case_matches_onnxruntime(subset_results, index):
    failures = {f["index"]: f for f in subset_results["failures"]}
    assert index not in failures, json.dumps(failures.get(index), indent=1)


def test_subset_covers_every_family_and_both_vector_widths(subset_results):
    assert set(subset_results["by_family"]) == set(FAMILIES)
    assert subset_results["isa_targets"] == ["cpu-x86-avx2", "cpu-x86-avx512"]
    assert subset_results["isa_run"], "the host runs neither AVX2 nor AVX-512 code"
    assert subset_results["opt_levels"] == [0, 1, 2, 3]
    matched = sum(v.get("match", 0) for v in subset_results["by_family"].values())
    assert matched >= len(SUBSET) - len(KNOWN)


# ----------------------------------------------------------------------------- reproducibility

def test_case_is_a_function_of_seed_and_index():
    for index in (0, 7, 13, 44):
        first, again = make_case(5, index), make_case(5, index)
        assert first.model.SerializeToString() == again.model.SerializeToString()
        assert first.description == again.description and "\n" not in first.description
        assert all(np.array_equal(first.inputs[k], again.inputs[k]) for k in first.inputs)
    assert make_case(5, 0).model.SerializeToString() != make_case(6, 0).model.SerializeToString()
    assert [make_case(0, i).family for i in range(len(FAMILIES))] == list(FAMILIES)


# ----------------------------------------------------------------------------- tolerance

def test_compare_tolerance_is_relative_to_the_output_scale():
    ref = np.array([100.0, -3.0, 0.5], dtype=np.float32)
    assert difftest.compare(ref + np.float32(0.005), ref)["ok"]  # 5e-5 of the scale
    assert not difftest.compare(ref + np.array([0, 0.05, 0], np.float32), ref)["ok"]  # 5e-4 of the scale
    assert not difftest.compare(ref[:2], ref)["ok"]
    assert "NaN" in difftest.compare(np.array([np.nan, -3, 0.5], np.float32), ref)["why"]
    inf = np.array([np.inf, 1.0], np.float32)
    assert difftest.compare(inf, inf)["ok"] and not difftest.compare(-inf, inf)["ok"]


# ----------------------------------------------------------------------------- classification

def _case_with(model, inputs):
    from tvm_autoglm.testing.cases import Case

    return Case(0, 0, "custom", "custom model", model, inputs)


def _relu_model(op="Relu"):
    return make_model([helper.make_node(op, ["x"], ["y"])], {"x": [2, 3]}, {"y": [2, 3]})


def _run_custom(monkeypatch, model, **spec):
    import tvm_autoglm.testing.cases as cases

    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    monkeypatch.setattr(cases, "make_case", lambda *a, **k: _case_with(model, {"x": x}))
    return difftest.run_case({"seed": 0, "index": 0, "opt_levels": [1], "isa": False, **spec})


def test_unsupported_op_is_refused(monkeypatch):
    from tvm_autoglm import onnx_model

    monkeypatch.setattr(onnx_model, "supported_ops", lambda: {"Add"})
    result = _run_custom(monkeypatch, _relu_model())
    assert result["outcome"] == "refused" and "Relu" in result["error"]


def test_error_after_the_support_check_is_an_internal_error(monkeypatch):
    import tvm_autoglm.pipeline as pipeline
    from tvm_autoglm.errors import CompileError

    def broken(*args, **kwargs):
        raise CompileError("scheduling failed: boom")

    monkeypatch.setattr(pipeline, "compile_model", broken)
    result = _run_custom(monkeypatch, _relu_model())
    assert result["outcome"] == "internal_error" and "boom" in result["builds"][0]["error"]


def test_memory_guard_refusal_is_unchecked_not_an_internal_error(monkeypatch):
    """The compile-memory guard refusing on a busy machine says nothing about the compiler (seen: a
    campaign beside other jobs logged hundreds of such 'internal errors')."""
    import tvm_autoglm.pipeline as pipeline
    from tvm_autoglm.resources import OutOfMemoryError

    def short_of_memory(*args, **kwargs):
        raise OutOfMemoryError("model: compiling a 0.00 GiB model needs about 1.0 GiB of memory, only 0.8 GiB is available")

    monkeypatch.setattr(pipeline, "compile_model", short_of_memory)
    result = _run_custom(monkeypatch, _relu_model())
    assert result["outcome"] == "no_memory" and "no_memory" not in difftest.FAILURES


def test_wrong_output_is_a_mismatch(monkeypatch):
    from tvm_autoglm.runtime.session import Session

    real_run = Session.run
    monkeypatch.setattr(Session, "run", lambda self, *a, **k: {n: v + 0.01 for n, v in real_run(self, *a, **k).items()})
    result = _run_custom(monkeypatch, _relu_model())
    assert result["outcome"] == "mismatch" and "tol" in result["builds"][0]["why"]


def test_model_onnxruntime_rejects_is_invalid_not_ours(monkeypatch):
    result = _run_custom(monkeypatch, _relu_model("NoSuchOp"))
    assert result["outcome"] == "invalid"


def test_a_crashing_case_is_recorded_and_the_rest_still_run(tmp_path):
    crashed = run_isolated([{"id": 0}, {"id": 1}], "faulthandler:_sigsegv", timeout_per_case=60, workdir=tmp_path)
    assert all("CRASH" in crashed[i]["crash"] for i in (0, 1)), crashed
    fine = run_isolated([{"id": 0}, {"id": 1}], "json:dumps", timeout_per_case=60, workdir=tmp_path)
    assert fine == {0: '{"id": 0}', 1: '{"id": 1}'}
