"""Artifacts are all-or-nothing, versions are checked, and memory limits fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import assert_clean_error, cli

import tvm_autoglm
from tvm_autoglm.errors import ArtifactError


def test_crash_during_export_leaves_no_partial_files(workdir, mlp_onnx, monkeypatch):
    import tvm_autoglm.artifact as artifact

    model = tvm_autoglm.compile(mlp_onnx, opt_level=1)
    out = workdir / "crash" / "mlp.so"
    real_export = model._executable.export_library

    def export_then_die(path, **kwargs):
        real_export(path, **kwargs)  # the library is fully written to the temp name ...
        raise KeyboardInterrupt  # ... and then the process is interrupted

    monkeypatch.setattr(model._executable, "export_library", export_then_die, raising=False)
    with pytest.raises(KeyboardInterrupt):
        artifact.export(model._executable, model.manifest, out)
    leftovers = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], f"partial files left behind: {leftovers}"


def test_manifest_from_another_tvm_version_is_refused(workdir, mlp_so):
    copy = workdir / "oldtvm" / "mlp.so"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(mlp_so, copy)
    manifest = json.loads(mlp_so.with_suffix(".json").read_text())
    manifest["versions"]["tvm"] = "0.19.0"
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="TVM 0.19.0"):
        tvm_autoglm.load(copy)
    assert_clean_error(cli("execute", "--binary", copy), "0.19.0", "rebuild")


def test_manifest_from_another_autoglm_version_warns_and_runs(workdir, mlp_so, mlp_inputs):
    copy = workdir / "oldglm" / "mlp.so"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(mlp_so, copy)
    manifest = json.loads(mlp_so.with_suffix(".json").read_text())
    manifest["versions"]["tvm_autoglm"] = "0.0.1"
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="0.0.1"):
        model = tvm_autoglm.load(copy)
    expected = tvm_autoglm.load(mlp_so).run(mlp_inputs)
    np.testing.assert_array_equal(model.run(mlp_inputs)["probs"], expected["probs"])


def test_model_too_large_for_memory_fails_clearly(workdir, mlp_onnx):
    result = cli("compile", "--model", mlp_onnx, "--output", workdir / "x.so", env={"AUTOGLM_AVAILABLE_MEMORY": str(64 << 20)})
    assert_clean_error(result, "mlp.onnx", "GiB of memory", "available")
