"""In-model check: a record that loses inside the model is vetoed and compile keeps the default schedule."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort

from tiny import same_structure, scheduled_bodies

from tvm_autoglm.tuning import in_model


def test_vetoed_kernel_keeps_the_default_schedule(tuned, tiny_model, tmp_path):
    import tvm_autoglm
    from tvm_autoglm.runtime.manifest import write_json_atomic

    db = tmp_path / "db"
    shutil.copytree(tuned[1], db, ignore=shutil.ignore_patterns("logs", in_model.VETO_FILE))
    build, default_bodies, _ = scheduled_bodies(tiny_model, None)
    _, applied_bodies, tuning = scheduled_bodies(tiny_model, db)
    assert tuning["records_applied"] == 2 and "vetoed" not in tuning
    kernels = sorted(default_bodies)
    name = next(n for n in kernels if n.startswith("fused_matmul"))
    write_json_atomic(db / in_model.VETO_FILE, {"format": 1, "vetoed": {in_model.workload_key(build.mod[name]): {"task": name}}})

    _, vetoed_bodies, tuning = scheduled_bodies(tiny_model, db)
    assert tuning["vetoed"] == 1 and tuning["records_applied"] == 1
    assert same_structure(vetoed_bodies[name], default_bodies[name])  # the default rule's schedule, not the record's
    # A veto is a scheduling choice only: the answers stay the same.
    model = tvm_autoglm.compile(tiny_model, tuning_db=str(db), use_shipped_schedules=False)
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    want = ort.InferenceSession(tiny_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.run(x=x)["y"], want, rtol=1e-4, atol=1e-5)


def test_check_profiles_both_builds_and_writes_the_vetoes(tuned, tiny_model, tmp_path):
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.tuning.tasks import extract

    db = tmp_path / "db"
    shutil.copytree(tuned[1], db, ignore=shutil.ignore_patterns("logs", in_model.VETO_FILE))
    build = build_relax(tiny_model, "cpu", 3)
    names = [t.name for t in extract(build.mod, build.target.tvm_target(), min_share=0.0)[0]]
    rows = in_model.check(build, db, names, rounds=2, repeat=3)
    assert [r["task"] for r in rows] == names
    vetoes = in_model.read_vetoes(db)
    for row in rows:
        assert row["default_ms"] > 0 and row["tuned_ms"] > 0
        assert row["vetoed"] == (row["tuned_ms"] > row["default_ms"] * 1.02)
        key = in_model.workload_key(build.mod[row["task"]])
        assert (key in vetoes) == row["vetoed"]
