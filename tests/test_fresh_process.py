"""An exported .so runs in a fresh process that imports only tvm and numpy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from helpers import FP32_ATOL, FP32_RTOL, ort_run

SCRIPT = r"""
import json, sys
import numpy as np
import tvm
from tvm import relax
lib = tvm.runtime.load_module(sys.argv[1])
vm = relax.VirtualMachine(lib, tvm.cpu())
data = np.load(sys.argv[2])
manifest = json.load(open(sys.argv[3]))
args = [tvm.runtime.tensor(data[spec["name"]]) for spec in manifest["inputs"]]
out = vm["main"](*args)
outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
np.savez(sys.argv[4], **{spec["name"]: o.numpy() for spec, o in zip(manifest["outputs"], outs)})
banned = [m for m in ("onnx", "onnxruntime", "xgboost", "tvm_autoglm") if m in sys.modules]
print(json.dumps(banned))
"""


def test_exported_library_runs_with_plain_tvm_runtime(mlp_so, mlp_onnx, mlp_inputs, workdir):
    npz, result = workdir / "fresh_in.npz", workdir / "fresh_out.npz"
    np.savez(npz, **mlp_inputs)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(mlp_so), str(npz), str(mlp_so.with_suffix(".json")), str(result)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    expected = ort_run(mlp_onnx, mlp_inputs)
    with np.load(result) as data:
        for name in ("logits", "probs"):
            np.testing.assert_allclose(data[name], expected[name], rtol=FP32_RTOL, atol=FP32_ATOL)


def test_ffi_pin_save_json_does_not_crash():
    """apache-tvm-ffi 0.1.15.post2 segfaults here, which kills MetaSchedule's database commit."""
    proc = subprocess.run(
        [sys.executable, "-c", "import tvm; s = tvm.ir.save_json(tvm.tirx.IntImm('int32', 1)); print(len(s))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"save_json crashed (rc {proc.returncode}): check the apache-tvm-ffi pin\n{proc.stderr[-2000:]}"
    assert int(proc.stdout.strip()) > 0
