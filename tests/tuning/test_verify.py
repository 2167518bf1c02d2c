"""Re-measuring the leading records: a lucky (or forged) search time does not survive."""

from __future__ import annotations

import json

from tvm_autoglm.tuning import database as dbmod
from tvm_autoglm.tuning.baseline import baseline_seconds, is_baseline_trace


def _forge_fastest(db_dir, seconds: float) -> int:
    """Give one search record per workload an impossible time; returns how many were forged."""
    path = db_dir / dbmod.RECORDS
    lines = path.read_text().splitlines()
    forged, seen = 0, set()
    for i, line in enumerate(lines):
        value = json.loads(line)
        if value[0] in seen or '"Sample' not in line:
            continue
        seen.add(value[0])
        value[1][1] = [seconds]
        lines[i] = json.dumps(value)
        forged += 1
    path.write_text("\n".join(lines) + "\n")
    return forged


def test_remeasure_replaces_a_too_good_time_and_keeps_the_fair_best(db_copy, tiny_model):
    from tvm.s_tir import meta_schedule as ms

    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.runtime.session import default_thread_count
    from tvm_autoglm.tuning.fastimport import preload_tensor_intrin
    from tvm_autoglm.tuning.tasks import extract
    from tvm_autoglm.tuning.verify import remeasure

    assert _forge_fastest(db_copy, 1e-9) == 2
    build = build_relax(tiny_model, "cpu", 3)
    target = build.target.tvm_target()
    keep, _ = extract(build.mod, target, min_share=0.0)
    database = dbmod.open_db(db_copy, create=False)
    assert all(dbmod.best_seconds(database, t.mod) == 1e-9 for t in keep)

    default_thread_count()
    builder = ms.builder.LocalBuilder(max_workers=2, timeout_sec=300, initializer=preload_tensor_intrin)
    runner = ms.runner.LocalRunner(timeout_sec=120, evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=0))
    summary = remeasure(db_copy, [t.mod for t in keep], target, builder, runner, top_k=2, rounds=2)

    assert len(summary) == 2
    database = dbmod.open_db(db_copy, create=False)
    for t in keep:
        best = dbmod.best_seconds(database, t.mod)
        assert best > 1e-7, "the forged time survived re-measurement"
        base = baseline_seconds(database, t.mod)
        assert base is not None and best <= base  # the baseline took part in the same comparison
    for entry in summary.values():
        assert entry["remeasured"] >= 3 and entry["baseline_s"] is not None
    # The database still loads whole and every record kept its trace.
    records = database.get_all_tuning_records()
    assert len(records) == dbmod.count_records(db_copy)
    assert sum(is_baseline_trace(r.trace) for r in records) == 2


def test_tune_reports_remeasured_times(tuned):
    result, _ = tuned
    for task in result.tasks:
        assert task["default_us"] is not None and task["best_us"] <= task["default_us"] + 1e-6
