"""The default rule's schedule is a measured record, so a tuned build never loses to an untuned one."""

from __future__ import annotations

from collections import Counter

import pytest

from tiny import same_structure, scheduled_bodies

from tvm_autoglm.tuning import database as dbmod
from tvm_autoglm.tuning.baseline import baseline_seconds, is_baseline_trace


def _records(db_dir):
    return dbmod.open_db(db_dir, create=False).get_all_tuning_records()


def _kernel_bodies(model, db_dir):
    _, bodies, tuning = scheduled_bodies(model, db_dir)
    return bodies, tuning


def _db_with(tmp_path, name, records):
    """A fresh database holding exactly ``records`` (workloads re-committed)."""
    from tvm.s_tir import meta_schedule as ms

    db = dbmod.open_db(tmp_path / name)
    for rec, secs in records:
        workload = db.commit_workload(rec.workload.mod)
        db.commit_tuning_record(ms.database.TuningRecord(rec.trace, workload, [secs], rec.target, rec.args_info))
    return tmp_path / name


def test_tune_measures_one_default_schedule_per_kernel(tuned):
    result, db = tuned
    assert [b["status"] for b in result.baselines] == ["measured", "measured"]
    assert all(b["rule"] == "Matmul" and b["us"] > 0 for b in result.baselines)
    baseline_records = [r for r in _records(db) if is_baseline_trace(r.trace)]
    per_workload = Counter(dbmod.workload_key(r.workload) for r in baseline_records)
    assert len(per_workload) == 2 and set(per_workload.values()) == {1}
    # Search records are not mistaken for baselines: they carry sampling decisions.
    assert sum(1 for r in _records(db) if not is_baseline_trace(r.trace)) == result.trials
    assert result.records_after - result.records_before == result.trials + 2
    for task in result.tasks:
        assert task["default_us"] is not None
        assert task["best_us"] <= task["default_us"] + 1e-9  # the best record includes the baseline


def test_resume_does_not_measure_the_baseline_again(db_copy, tiny_model):
    from tvm_autoglm import tune

    before = len([r for r in _records(db_copy) if is_baseline_trace(r.trace)])
    result = tune(tiny_model, trials=8, tuning_db=db_copy, seed=0, progress=False, use_shipped_schedules=False)
    assert [b["status"] for b in result.baselines] == ["present", "present"]
    assert len([r for r in _records(db_copy) if is_baseline_trace(r.trace)]) == before


def test_baseline_record_replays_to_exactly_the_default_schedule(tuned, tiny_model, tmp_path):
    import tvm

    _, db = tuned
    baselines = [(r, float(r.run_secs[0])) for r in _records(db) if is_baseline_trace(r.trace)]
    only_baselines = _db_with(tmp_path, "baselines", baselines)
    default_bodies, default_tuning = _kernel_bodies(tiny_model, None)
    applied_bodies, applied_tuning = _kernel_bodies(tiny_model, only_baselines)
    assert default_tuning["tuned_kernels"] == 0
    assert applied_tuning["records_applied"] == 2
    for name, body in default_bodies.items():
        tvm.ir.assert_structural_equal(applied_bodies[name], body)


@pytest.mark.parametrize("search_factor, search_wins", [(100.0, False), (0.01, True)], ids=["slower-search", "faster-search"])
def test_a_search_record_applies_only_when_it_beats_the_default(tuned, tiny_model, tmp_path, search_factor, search_wins):
    _, db = tuned
    records = _records(db)
    default_bodies, _ = _kernel_bodies(tiny_model, None)
    chosen = []
    for workload in {dbmod.workload_key(r.workload) for r in records}:
        mine = [r for r in records if dbmod.workload_key(r.workload) == workload]
        base = next(r for r in mine if is_baseline_trace(r.trace))
        search = next(r for r in mine if not is_baseline_trace(r.trace))
        base_s = float(base.run_secs[0])
        chosen += [(base, base_s), (search, base_s * search_factor)]
    db_dir = _db_with(tmp_path, "mixed", chosen)
    database = dbmod.open_db(db_dir, create=False)
    for rec, secs in chosen:
        if is_baseline_trace(rec.trace):
            assert baseline_seconds(database, rec.workload.mod) == pytest.approx(secs)
    bodies, tuning = _kernel_bodies(tiny_model, db_dir)
    assert tuning["records_applied"] == 2
    same_as_default = [same_structure(bodies[name], body) for name, body in default_bodies.items()]
    assert same_as_default == [not search_wins] * len(default_bodies)


def test_same_seed_and_database_give_the_same_choices(tuned, tiny_model, tmp_path):
    """Issue 4: reproducible search. Only the first batch per task is compared: later batches
    depend on measured times, which no seed can fix on a shared machine."""
    import shutil

    from tvm_autoglm import tune

    _, db = tuned
    new_traces = []
    for run in ("a", "b"):
        copy = tmp_path / run
        shutil.copytree(db, copy, ignore=shutil.ignore_patterns("logs"))
        before = {str(r.trace) for r in _records(copy)}
        tune(tiny_model, trials=8, tuning_db=copy, seed=7, progress=False, use_shipped_schedules=False)
        new_traces.append(sorted(str(r.trace) for r in _records(copy) if str(r.trace) not in before))
    assert len(new_traces[0]) == 8
    assert new_traces[0] == new_traces[1]
