"""LLVM 22's SLP vectorizer bug (tvm_autoglm/llvm_codegen.py): the failing kernel builds and is right; the fallback's logic.

The real case is difftest seed 1, case 410 (a grouped Conv1d, SAME_LOWER, O0), pinned to the
``cpu-x86-avx2`` target: the bug depends on the target's mcpu (haswell/znver3 fail, AVX-512 does
not), not on the host, and AVX2 code runs on AVX2 and AVX-512 hosts alike. Reference: onnxruntime;
tolerance 1e-5 relative and absolute (15 products per output).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from helpers import ort_run

import tvm_autoglm
from tvm_autoglm import llvm_codegen
from tvm_autoglm.testing.cases import make_case


def test_grouped_conv1d_same_lower_builds_and_matches_onnxruntime():
    case = make_case(1, 410)
    assert "group=2, auto_pad=SAME_LOWER" in case.description, case.description  # the generator still makes that case
    got = tvm_autoglm.compile(case.model, target="cpu-x86-avx2", opt_level=0).run(**case.inputs)
    expected = ort_run(case.model, case.inputs)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)


class _FakeCompile:
    """Stands in for ``tvm.compile``: raises ``errors`` in turn, then returns the target it was given."""

    def __init__(self, *errors):
        self.errors, self.targets = list(errors), []

    def __call__(self, mod, target):
        self.targets.append(target)
        if self.errors:
            raise self.errors.pop(0)
        return target


TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
VERIFY = RuntimeError("LLVM module verification failed with the following errors: \nInstruction does not dominate all uses!")


def test_verifier_failure_rebuilds_without_slp(monkeypatch):
    fake, notes = _FakeCompile(VERIFY), []
    monkeypatch.setattr(llvm_codegen.tvm, "compile", fake)
    built = llvm_codegen.compile_module(None, TARGET, on_fallback=notes.append)
    assert len(fake.targets) == 2
    assert llvm_codegen.SLP_OFF not in str(fake.targets[0]) and llvm_codegen.SLP_OFF in str(built)
    assert str(built.attrs["mcpu"]) == "haswell"  # the rest of the target is kept
    assert len(notes) == 1 and "dominate" in notes[0], notes


def test_other_failures_are_not_retried(monkeypatch):
    fake = _FakeCompile(RuntimeError("Divide by zero"))
    monkeypatch.setattr(llvm_codegen.tvm, "compile", fake)
    with pytest.raises(RuntimeError, match="Divide by zero"):
        llvm_codegen.compile_module(None, TARGET)
    assert len(fake.targets) == 1


def test_second_verifier_failure_propagates(monkeypatch):
    fake = _FakeCompile(VERIFY, VERIFY)
    monkeypatch.setattr(llvm_codegen.tvm, "compile", fake)
    with pytest.raises(RuntimeError, match="verification failed"):
        llvm_codegen.compile_module(None, TARGET)
    assert len(fake.targets) == 2
