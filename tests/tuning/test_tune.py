"""Tuning end to end on a tiny model: records land, compile uses them, resume, shipped pickup."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest

from tvm_autoglm.tuning import database as dbmod


def _trace_keys(db_dir):
    db = dbmod.open_db(db_dir, create=False)
    return Counter((dbmod.workload_key(r.workload), str(r.trace)) for r in db.get_all_tuning_records())


def test_tune_writes_records_for_every_kernel(tuned):
    result, db = tuned
    assert (db / dbmod.WORKLOADS).is_file() and (db / dbmod.RECORDS).is_file()
    assert result.trials >= 16
    baselines = sum(1 for b in result.baselines if b["status"] == "measured")  # default schedules (test_baseline.py)
    assert result.records_after - result.records_before == result.trials + baselines == dbmod.count_records(db)
    assert len(result.tasks) == 2
    assert all(t["best_us"] is not None and t["best_us"] > 0 for t in result.tasks)
    assert result.estimated_ms_end is not None and result.estimated_ms_end <= result.estimated_ms_start + 1e-9
    assert [p["trials"] for p in result.curve] == sorted(p["trials"] for p in result.curve)
    # MetaSchedule's per-task logs go to files, not the terminal.
    assert any((db / "logs").glob("*task_0*.log"))


def test_compiled_module_uses_the_records(tuned, tiny_model):
    import tvm_autoglm

    _, db = tuned
    model = tvm_autoglm.compile(tiny_model, tuning_db=str(db), use_shipped_schedules=False)
    tuning = model.manifest["tuning"]
    # The fixture's tune ends with the in-model check; on a loaded machine it may veto a
    # record (that kernel then keeps its default schedule): every record is applied or vetoed.
    assert tuning["records_applied"] + tuning.get("vetoed", 0) == 2
    assert tuning["tuned_kernels"] == tuning["records_applied"] >= 1
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    got = model.run(x=x)["y"]
    want = ort.InferenceSession(tiny_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resume_measures_nothing_twice(db_copy, tiny_model):
    """A second run on the same database adds only schedules it had not measured."""
    from tvm_autoglm import tune

    before = _trace_keys(db_copy)
    assert max(before.values()) == 1
    result = tune(tiny_model, trials=8, tuning_db=db_copy, seed=0, progress=False, use_shipped_schedules=False)
    after = _trace_keys(db_copy)
    assert result.trials >= 8
    assert sum(after.values()) == sum(before.values()) + result.trials
    duplicates = {k: v for k, v in after.items() if v > 1}
    assert not duplicates, f"{len(duplicates)} schedules were measured twice"
    # Warm start: the estimate starts from the records already there.
    assert result.estimated_ms_start is not None and result.curve


def test_shipped_schedules_apply_without_tuning(tuned, tiny_model, tmp_path, monkeypatch):
    import tvm_autoglm

    _, db = tuned
    shipped = tmp_path / "schedules"
    from tvm_autoglm.targets import isa_family, load_target

    dbmod.export_best(db, shipped / isa_family(load_target("cpu")) / "tiny-mlp")  # the host's family folder
    monkeypatch.setenv("AUTOGLM_SCHEDULES_DIR", str(shipped))
    model = tvm_autoglm.compile(tiny_model)  # no tuning_db, O3: shipped schedules apply
    tuning = model.manifest["tuning"]
    assert tuning["tuned_kernels"] == 2 and tuning["shipped_schedules"]
    model = tvm_autoglm.compile(tiny_model, use_shipped_schedules=False)
    assert model.manifest["tuning"]["tuned_kernels"] == 0
    # Zero trials: seeding a fresh database from the shipped one, nothing measured.
    fresh = tmp_path / "fresh"
    result = tvm_autoglm.tune(tiny_model, trials=0, tuning_db=fresh, progress=False)
    assert result.trials == 0 and dbmod.count_records(fresh) == 2  # the best record per kernel
    assert all(t["best_us"] is not None for t in result.tasks)


def test_negligible_kernels_are_skipped(tiny_model):
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.tuning.tasks import extract

    build = build_relax(tiny_model, "cpu", 3)
    keep, skip = extract(build.mod, build.target.tvm_target(), min_share=0.0)
    assert len(keep) == 2 and not skip
    assert sum(t.share for t in keep) == pytest.approx(1.0)
    keep, skip = extract(build.mod, build.target.tvm_target(), min_share=0.5)
    assert len(keep) == 1 and len(skip) == 1  # the two GEMMs are near 50/50


def test_bad_budgets_are_one_line_errors(tiny_model, tmp_path):
    from tvm_autoglm import tune
    from tvm_autoglm.errors import AutoGLMError

    with pytest.raises(AutoGLMError, match="time budget"):
        tune(tiny_model, time_budget="soon", tuning_db=tmp_path, progress=False)
    with pytest.raises(AutoGLMError, match="trials"):
        tune(tiny_model, trials=-1, tuning_db=tmp_path, progress=False)


def test_parse_duration():
    from tvm_autoglm.tuning import parse_duration

    assert parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("45") == 45
