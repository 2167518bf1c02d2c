"""Exporting and loading through the Python API keeps TVM's per-function "Scope Saving/Loaded" lines off fd 2.

The C++ runtime writes them to the process's stderr descriptor, which only a
fresh process with its own captured fd 2 can observe; the child also replaces
``sys.stderr`` (as pytest and notebooks do), the case where a filter keyed on
``sys.stderr.fileno()`` used to give up.
"""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

CHILD = r"""
import io, os, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import tvm_autoglm
from helpers import assert_close, mlp_model, ort_run
from tvm_autoglm.native_log import quiet_native_stderr

out = sys.argv[1]
model = mlp_model()
inputs = {"x": np.random.default_rng(0).standard_normal((2, 16)).astype("float32"), "scale": np.array([0.5], "float32")}
compiled = tvm_autoglm.compile(model)
compiled.export(out + "/m.so")
sys.stderr = io.StringIO()  # the Python object replaced, fd 2 untouched
compiled.export(out + "/m.glm")
sys.stderr = sys.__stderr__
want = ort_run(model, inputs)
for path in ("m.so", "m.glm"):
    assert_close(tvm_autoglm.load(out + "/" + path).run(inputs), want)
with quiet_native_stderr():  # other native lines still reach the user
    os.write(2, b"[native] something the user must see\n")
print("done")
"""


def test_api_export_and_load_print_no_scope_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(REPO / "tests")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "done"
    assert (tmp_path / "m.so").is_file() and (tmp_path / "m.glm").is_file()
    noise = [line for line in proc.stderr.splitlines() if "Scope Saving" in line or "Scope Loaded" in line]
    assert noise == [], f"{len(noise)} scope lines, first: {noise[0]}"
    assert proc.stderr.count("[native] something the user must see") == 1, proc.stderr[-2000:]


TO_FILE_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from tvm_autoglm.native_log import native_stderr_to_file

log = sys.argv[1]
with open(log, "w") as f:
    f.write("old line\n")
with native_stderr_to_file(log):
    os.write(2, b"[native] per-candidate chatter\n")  # what MetaSchedule's C++ side prints
    print("[tune] progress line", file=sys.stderr, flush=True)
    inside_tty = sys.stderr.isatty()
os.write(2, b"[native] after the block\n")
print("tty", inside_tty)
"""


def test_native_stderr_goes_to_the_log_while_python_stderr_stays_on_the_terminal(tmp_path):
    log = tmp_path / "tvm_native.log"
    proc = subprocess.run(
        [sys.executable, "-c", TO_FILE_CHILD, str(log), str(REPO)], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log.read_text().splitlines() == ["old line", "[native] per-candidate chatter"]  # appended, not truncated
    assert proc.stderr.splitlines() == ["[tune] progress line", "[native] after the block"]
    assert proc.stdout.strip() == "tty False"  # the child's stderr is a pipe: the proxy answers for it
