"""Only sure wins ship: a kernel whose best record is our default rule's, or whose record lost in the model, stays out."""

from __future__ import annotations

import shutil

from tvm_autoglm.tuning import database as dbmod
from tvm_autoglm.tuning import in_model
from tvm_autoglm.tuning.baseline import is_baseline_trace
from tvm_autoglm.tuning.shipping import shippable


def _tasks(tiny_model):
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.tuning.tasks import extract

    build = build_relax(tiny_model, "cpu", 3)
    return build, extract(build.mod, build.target.tvm_target(), min_share=0.0)[0]


def _make_search_record_best(db, mod) -> None:
    """Re-commit one of the kernel's search records as the fastest (as if the search had won)."""
    from tvm.s_tir import meta_schedule as ms

    database = dbmod.open_db(db, create=False)
    workload = database.commit_workload(mod)
    search = [r for r in database.get_top_k(workload, 1 << 20) if not is_baseline_trace(r.trace)]
    assert search, "the 16-trial fixture measured no search record for this kernel"
    rec = search[-1]
    database.commit_tuning_record(ms.database.TuningRecord(rec.trace, workload, [1e-9], rec.target, rec.args_info))


def test_only_search_wins_that_were_not_vetoed_ship(tuned, tiny_model, tmp_path):
    from tvm_autoglm.runtime.manifest import write_json_atomic

    db = tmp_path / "db"
    shutil.copytree(tuned[1], db, ignore=shutil.ignore_patterns("logs", in_model.VETO_FILE))
    build, tasks = _tasks(tiny_model)
    mods = [t.mod for t in tasks]
    database = dbmod.open_db(db, create=False)
    baseline_best = [is_baseline_trace(database.get_top_k(database.commit_workload(m), 1)[0].trace) for m in mods]
    winners, reasons = shippable(db, mods)
    assert len(winners) == baseline_best.count(False)
    assert sum("default schedule is still the best" in r for r in reasons) == baseline_best.count(True)

    # Make both kernels search wins, then veto one: exactly the other ships.
    for m in mods:
        _make_search_record_best(db, m)
    winners, _ = shippable(db, mods)
    assert len(winners) == len(mods) == 2
    vetoed = tasks[0]
    write_json_atomic(db / in_model.VETO_FILE, {"format": 1, "vetoed": {in_model.workload_key(build.mod[vetoed.name]): {"task": vetoed.name}}})
    winners, reasons = shippable(db, mods)
    assert [w for w in winners] == [tasks[1].mod]
    assert any("in-model veto" in r for r in reasons)
