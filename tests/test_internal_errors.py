"""One-line errors: the line of a TVM error that says what failed, and internal errors (exit 3) kept
apart from user errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from helpers import assert_clean_error, cli, mlp_model

from tvm_autoglm.errors import AutoGLMError, DeviceError, InputError, InternalError, error_summary, stage_errors


def _structural_equal_error() -> Exception:
    """A real TVM error whose message carries two TVMScript dumps after its reason."""
    import tvm
    from tvm import te

    a = te.placeholder((4,), name="A")
    f = te.create_prim_func([a, te.compute((4,), lambda i: a[i] * 2, name="B")])
    g = te.create_prim_func([a, te.compute((4,), lambda i: a[i] * 3, name="C")])
    try:
        tvm.ir.assert_structural_equal(f, g)
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("the two functions compared equal")


def _undefined_var_error() -> Exception:
    """A real TVM 'Check failed' from codegen of a Relax function that uses an unbound variable."""
    import tvm
    from tvm import relax

    x = relax.Var("x", relax.TensorType((4,), "float32"))
    y = relax.Var("y", relax.TensorType((4,), "float32"))
    mod = tvm.IRModule({"main": relax.Function([x], relax.op.add(x, y), relax.TensorType((4,), "float32"))})
    try:
        tvm.compile(mod, "llvm")
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("codegen accepted an unbound variable")


def test_a_tvm_error_with_a_tvmscript_dump_yields_its_check_failed_line():
    line = error_summary(_structural_equal_error())
    assert line.startswith("StructuralEqual check failed, caused by lhs at"), line
    assert "T." not in line and "#" not in line


def test_a_tvm_check_failure_yields_the_check_line():
    line = error_summary(_undefined_var_error())
    assert "Check failed" in line and "Var y is not defined" in line, line


def test_a_dump_ending_in_the_metadata_line_is_never_the_summary():
    """The reported bug: 'code generation for target cpu failed: # Metadata omitted. ...'."""
    err = RuntimeError(
        "Memory verification failed with the following errors:\n"
        "# from tvm.script import tirx as T\n@T.prim_func\ndef main(A: T.Buffer((4,), \"float32\")):\n"
        "    A[0] = T.float32(1)\n# Metadata omitted. Use show_meta=True in script() method to show it."
    )
    assert error_summary(err) == "Memory verification failed with the following errors:"
    traceback_style = ValueError("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: shapes differ")
    assert error_summary(traceback_style) == "ValueError: shapes differ"


def test_stage_errors_wraps_foreign_exceptions_and_keeps_ours():
    with pytest.raises(InternalError) as caught:
        with stage_errors("pass 'demo'", hint="skip the pass with --disable-pass demo"):
            raise _undefined_var_error()
    err = caught.value
    assert err.exit_code == 3 and err.stage == "pass 'demo'"
    text = err.one_line()
    assert text.startswith("internal compiler error in pass 'demo': ") and "Var y is not defined" in text
    assert "please report" in text and "--disable-pass demo" in text and "\n" not in text
    with pytest.raises(InputError) as kept:
        with stage_errors("anything"):
            raise InputError("bad input")
    assert kept.value.exit_code == 2 and not isinstance(kept.value, InternalError)


_INJECT = """
import sys, dataclasses
from tvm_autoglm.passes import registry
from tvm_autoglm.cli.main import main
registry._load_builtin_passes()
spec = registry._REGISTRY[{name!r}]
def broken():
    raise RuntimeError("injected failure\\n# from tvm.script import relax as R\\n@R.function\\ndef main(): pass")
registry._REGISTRY[{name!r}] = dataclasses.replace(spec, make=broken)
sys.exit(main(sys.argv[1:]))
"""


def test_a_failing_pass_is_an_internal_error_naming_the_stage(tmp_path):
    from tvm_autoglm.passes import passes_for

    name = passes_for(2, "cpu")[0].name
    model = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), model)
    proc = subprocess.run(
        [sys.executable, "-c", _INJECT.format(name=name), "compile", "--model", str(model), "--output", str(tmp_path / "m.so"),
         "--optimize-level", "2", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 3, proc.stderr
    line = assert_clean_error(proc, f"internal compiler error in pass '{name}': RuntimeError: injected failure",
                              "please report", f"--disable-pass {name}")
    assert "tvm.script" not in line


def test_user_errors_still_exit_2(tmp_path):
    result = cli("compile", "--model", tmp_path / "missing.onnx", "--output", tmp_path / "m.so")
    assert result.returncode == 2
    assert_clean_error(result, "missing.onnx")


def test_lazy_session_defers_only_a_missing_device(monkeypatch):
    from tvm_autoglm import api

    manifest = {"inputs": [], "outputs": [], "target": {"name": "gpu-x", "device": "cuda"}}

    def no_device(executable, manifest, weights=None):
        raise DeviceError("target gpu-x needs a CUDA device; none found")

    monkeypatch.setattr(api, "Session", no_device)
    session = api._lazy_session(object(), manifest)
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        session.run({})

    def broken(executable, manifest, weights=None):
        raise RuntimeError("VM init failed")

    monkeypatch.setattr(api, "Session", broken)
    with pytest.raises(RuntimeError, match="VM init failed"):
        api._lazy_session(object(), manifest)


def test_internal_error_is_an_autoglm_error_with_its_own_exit_code():
    """Front ends that print our errors print this one too; the exit code tells it apart."""
    err = InternalError("codegen", "boom")
    assert isinstance(err, AutoGLMError) and err.exit_code == 3 and AutoGLMError("x").exit_code == 2
