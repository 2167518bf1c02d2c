"""The wheel installs and works outside the source tree.

An editable install finds ``targets/`` and ``schedules/`` beside the package; a wheel
has only what it carries. This builds the wheel, installs it (not editable) into a
fresh virtual environment whose only other packages are the pinned dependencies
already installed here, and compiles and runs a tiny model from an unrelated
directory: the target file, the shipped schedules and the NPU simulator source
must all come from the installed package.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import REPO, mlp_model, ort_run

pytestmark = pytest.mark.skipif(not (REPO / "pyproject.toml").exists(), reason="needs the source tree")


def _run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AUTOGLM_TARGETS_DIR", "AUTOGLM_SCHEDULES_DIR")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), str(REPO)], root, clean_env)
    wheels = sorted((root / "dist").glob("tvm_autoglm-*.whl"))
    assert len(wheels) == 1, wheels

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The pinned dependencies come from this environment (a path line in a .pth: the
    # editable install's own .pth there is not processed, so only the wheel provides tvm_autoglm).
    new_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, clean_env).stdout.strip())
    (new_site / "_deps.pth").write_text("\n".join(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]) + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(new_site), str(wheels[0])], root, clean_env)
    return python, root, clean_env


def test_wheel_carries_targets_schedules_and_simulator_source(wheel_env):
    python, root, env = wheel_env
    probe = (
        "import json, tvm_autoglm, tvm_autoglm.targets as t, tvm_autoglm.tuning.apply as a, tvm_autoglm.npu.build as b;"
        "print(json.dumps({'package': tvm_autoglm.__file__, 'targets': str(t.targets_dir()),"
        "'names': sorted(p.stem for p in t.targets_dir().glob('*.json')), 'schedules': str(a.repo_schedules_dir()),"
        "'shipped': [str(p) for p in a.shipped_databases(t.load_target('cpu-x86-avx2'))], 'sim': b.SOURCE.is_file()}))"
    )
    info = json.loads(_run([str(python), "-c", probe], root, env).stdout.strip().splitlines()[-1])
    venv_dir = str(root / "venv")
    assert info["package"].startswith(venv_dir), info["package"]
    assert info["targets"].startswith(venv_dir) and info["targets"].endswith("_targets")
    assert {p.stem for p in (REPO / "targets").glob("*.json")} == set(info["names"])
    assert info["schedules"].startswith(venv_dir)
    assert len(info["shipped"]) == len(list((REPO / "schedules" / "x86-avx2").glob("*/database_workload.json"))) > 0
    assert info["sim"] is True


def test_installed_wheel_compiles_and_runs_a_model_from_another_directory(wheel_env):
    python, root, env = wheel_env
    work = root / "elsewhere"
    work.mkdir()
    model = mlp_model(batch=2)
    onnx.save(model, work / "mlp.onnx")
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 16)).astype("float32"), "scale": np.array([0.5], dtype="float32")}
    np.savez(work / "in.npz", **inputs)
    cli = [str(python), "-m", "tvm_autoglm"]
    _run(cli + ["compile", "--model", "mlp.onnx", "--target", "cpu-x86-avx2", "--output", "mlp.so"], work, env)
    _run(cli + ["execute", "--binary", "mlp.so", "--input", "in.npz", "--output", "out.npz"], work, env)
    got = dict(np.load(work / "out.npz"))
    expected = ort_run(model, inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)  # fp32 parity with onnxruntime
