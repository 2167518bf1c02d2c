"""The one compile flow (``pipeline.compile_model``): every caller goes through it, it stops
where asked, it re-finishes an existing build, and it refuses what cannot apply."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import FP32_ATOL, FP32_RTOL, assert_close, mlp_model, ort_run

import tvm_autoglm
from tvm_autoglm.pipeline import RelaxBuild, compile_model
from tvm_autoglm.runtime.session import Session

PACKAGE = Path(tvm_autoglm.__file__).resolve().parent
REPO = PACKAGE.parent


def _inputs(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 16)).astype("float32"), "scale": np.array([0.5], "float32")}


@pytest.mark.parametrize("batch,opt_level", [(1, 1), (3, 2)])
def test_compile_model_matches_onnxruntime(batch, opt_level):
    """Parity with onnxruntime at FP32_RTOL / FP32_ATOL; the manifest describes the same build."""
    model = mlp_model(batch=batch)
    done = compile_model(model, "cpu", opt_level)
    assert done.manifest["opt_level"] == opt_level and done.manifest["passes"] == done.build.passes
    assert_close(Session(done.executable, done.manifest).run(_inputs(batch)), ort_run(model, _inputs(batch)), FP32_RTOL, FP32_ATOL)


def test_until_relax_stops_before_scheduling_and_a_build_can_be_finished_later():
    model = mlp_model(batch=2)
    early = compile_model(model, "cpu", 2, until="relax")
    assert isinstance(early.build, RelaxBuild) and early.scheduled is None and early.executable is None and early.manifest is None
    late = compile_model(early.build)
    assert late.build is early.build and late.manifest["kernels"] == sorted(late.manifest["kernels"])
    assert_close(Session(late.executable, late.manifest).run(_inputs(2, seed=3)), ort_run(model, _inputs(2, seed=3)))


def test_unknown_stop_is_refused():
    with pytest.raises(ValueError, match="until must be one of"):
        compile_model(mlp_model(), "cpu", 1, until="schedule")


def test_front_options_on_an_existing_build_are_refused():
    build = compile_model(mlp_model(), "cpu", 1, until="relax").build
    with pytest.raises(ValueError, match="quantize, input_shapes cannot apply"):
        compile_model(build, quantize="int8", input_shapes={"x": [2, 16]})


# The stage functions the one flow is made of: only pipeline.py wires them together.
_STAGE_CALL = re.compile(r"\b(build_relax|build_executable|make_manifest|schedule_module)\(|\bschedule\(build\b")


def _stage_calls(files) -> list[str]:
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _STAGE_CALL.search(line) and not line.lstrip().startswith("def "):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_every_caller_compiles_through_compile_model():
    # quantize/sensitivity.py builds its probe (not the model) for the host CPU: a measuring
    # instrument, outside the flow; scheduling.py and pipeline.py are the flow itself.
    own = {PACKAGE / "pipeline.py", PACKAGE / "scheduling.py", PACKAGE / "quantize" / "sensitivity.py"}
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p not in own] + [REPO / "schedules" / "regenerate.py"]
    assert _stage_calls(files) == []


def test_dynamic_parameters_do_not_apply_to_an_imported_build():
    """dynamic_dims/specialize shape the import: on a RelaxBuild they are refused, naming the parameter."""
    build = compile_model(mlp_model(), "cpu", 1, until="relax").build
    with pytest.raises(ValueError, match="dynamic_dims, specialize cannot apply"):
        compile_model(build, dynamic_dims={"batch": (1, 4)}, specialize={"batch": [2]})
