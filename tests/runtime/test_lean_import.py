"""The deployment path: `tvm_autoglm.runtime.load(p).run(...)` in a fresh process loads no compiler code.

The child blocks `torch` the way a serving image without it would (tvm_ffi
imports torch eagerly when present), then reports which compiler modules
ended up in sys.modules. Outputs are checked against onnxruntime here, in the
parent, so the child needs nothing but the runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import FP32_ATOL, FP32_RTOL, ort_run, token_model

CHILD = r"""
import json, sys
sys.modules["torch"] = None  # as in an image without torch
import numpy as np
import tvm_autoglm.runtime
artifact, inputs_npz, outputs_npz = sys.argv[1:4]
with np.load(inputs_npz) as data:
    inputs = {name: data[name] for name in data.files}
outputs = tvm_autoglm.runtime.load(artifact).run(inputs)
np.savez(outputs_npz, **outputs)
BANNED = ("onnx", "onnxruntime", "xgboost", "tvm_autoglm.passes", "tvm_autoglm.pipeline", "tvm_autoglm.api",
          "tvm_autoglm.scheduling", "tvm_autoglm.schedule_rules", "tvm_autoglm.tuning", "tvm_autoglm.serve",
          "tvm.relax.frontend.onnx", "starlette", "uvicorn")
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and any(m == b or m.startswith(b + ".") for b in BANNED))
print(json.dumps({"loaded": loaded, "outputs": list(outputs)}))
"""


def run_child(artifact, inputs, workdir, tag):
    inputs_npz, outputs_npz = workdir / f"lean_{tag}_in.npz", workdir / f"lean_{tag}_out.npz"
    np.savez(inputs_npz, **inputs)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(artifact), str(inputs_npz), str(outputs_npz)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(outputs_npz) as data:
        outputs = {name: data[name] for name in report["outputs"]}
    return report, outputs


@pytest.mark.parametrize("kind", ["so", "glm"])
def test_lean_runtime_imports_no_compiler_and_matches_onnxruntime(kind, mlp_so, mlp_onnx, mlp_inputs, token_glm, token_inputs, workdir):
    if kind == "so":
        artifact, model, inputs = mlp_so, onnx.load(mlp_onnx), mlp_inputs
    else:
        artifact, model, inputs = token_glm, token_model(), token_inputs
    report, outputs = run_child(artifact, inputs, workdir, kind)
    assert report["loaded"] == [], f"the lean runtime pulled in {report['loaded']}"
    expected = ort_run(model, inputs)
    assert list(outputs) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=name)
