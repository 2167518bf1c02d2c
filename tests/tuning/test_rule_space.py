"""The Matmul rule as a MetaSchedule design space (tvm_autoglm/tuning/rule_space.py)."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tvm

from tiny import same_structure, tiny_mlp

from tvm_autoglm.tuning import database as dbmod
from tvm_autoglm.tuning import rule_space as rs


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> str:
    """Deep enough (K = 256) that the reduction can be K-blocked: the tiny model's K is 64."""
    return tiny_mlp(tmp_path_factory.mktemp("rule_space") / "deep.onnx", m=64, k=256, n=128)


@pytest.fixture(scope="module")
def deep_tasks(deep):
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.tuning import tasks as taskmod

    build = build_relax(deep, "cpu", 3)
    target = build.target.tvm_target()
    keep, _ = taskmod.extract(build.mod, target, min_share=0)
    return target, keep


def _postprocessed(trace, mod, target):
    """``trace`` replayed on ``mod`` and passed through the llvm postprocessors, as the search measures it."""
    from tvm.s_tir import meta_schedule as ms

    sch = tvm.s_tir.Schedule(mod)
    trace.apply_to_schedule(sch, remove_postproc=True)
    sch.enter_postproc()
    for post in ms.postproc.Postproc.create("llvm"):
        assert post.apply(sch)
    return sch.mod


def test_default_point_is_the_rule_schedule(deep_tasks):
    from tvm_autoglm.schedule_rules import default_schedule

    target, tasks = deep_tasks
    assert len(tasks) == 2
    for task in tasks:
        point = rs.default_point(task.mod, target)
        assert point is not None, task.name
        sch, picks = point
        names = [name for name, _, _ in picks]
        assert names[0] == "tile" and "k_block" in names
        assert all(value == 0 for _, _, value in picks)  # the rule's pick is option 0 here
        assert all(n > 1 for _, n, _ in picks)
        default, rule = default_schedule(task.mod["main"], target)
        assert rule == "Matmul"
        assert same_structure(sch.mod, default.mod)
        # ... also as measured: after MetaSchedule's postprocessors, and replayed from the trace
        assert same_structure(_postprocessed(sch.trace, task.mod, target), default.mod)
        assert rs.read_decisions(sch.trace) == [0] * len(picks)
        assert rs.read_decisions(default.trace) == []  # the baseline: no sampling


def test_non_default_points_differ_and_compute_the_same(deep_tasks):
    """Every tile x k-block point of each kernel lowers and matches the unscheduled kernel."""
    from tvm.s_tir import meta_schedule as ms

    target, tasks = deep_tasks
    rng = np.random.default_rng(0)
    for task in tasks:
        _, picks = rs.default_point(task.mod, target)
        options = {name: n for name, n, _ in picks}
        ref_lib = tvm.compile(task.mod, target)
        func = task.mod["main"]
        args = [rng.standard_normal([int(s) for s in info.shape]).astype(str(info.dtype))
                for info in ms.arg_info.ArgInfo.from_prim_func(func)]
        want = [tvm.runtime.tensor(a) for a in args]
        ref_lib["main"](*want)
        expect = want[-1].numpy()
        seen = set()
        tiles = range(min(options["tile"], 2))
        for tile, kb in itertools.product(tiles, range(options["k_block"])):
            sch, got_picks = rs.build_point(task.mod, target, [tile, kb])
            assert [v for _, _, v in got_picks][:2] == [tile, kb]
            assert rs.read_decisions(sch.trace)[:2] == [tile, kb]
            seen.add(sch.mod.script())
            lib = tvm.compile(sch.mod, target)
            got = [tvm.runtime.tensor(a) for a in args]
            lib["main"](*got)
            # same summation order per output element (k-blocking keeps k ascending)
            np.testing.assert_allclose(got[-1].numpy(), expect, rtol=1e-5, atol=1e-5, err_msg=f"{task.name} {tile} {kb}")
        assert len(seen) == len(tiles) * options["k_block"]  # every decision changes the schedule


@pytest.mark.slow  # 1-2 min on 2 cores; rule_space is off by default
def test_mutator_moves_one_decision_and_starts_from_the_baseline(deep_tasks, tmp_path):
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    from tvm_autoglm.schedule_rules import default_schedule

    target, tasks = deep_tasks
    contexts, _ = extracted_tasks_to_tune_contexts([t.extracted for t in tasks], work_dir=str(tmp_path), seed=0,
                                                   num_threads=1, space=rs.union_space(target))
    for ctx, task in zip(contexts, tasks):
        spaces = ctx.generate_design_space()
        ours = [s for s in spaces if rs.read_decisions(s.trace)]
        assert len(ours) < len(spaces)  # generic spaces + the rule's default point and its neighbours
        assert not any(rs.read_decisions(ours[0].trace))
        assert all(sum(v != 0 for v in rs.read_decisions(s.trace)) == 1 for s in ours[1:])
        mutators = [m for m in ctx.space_generator.mutator_probs if type(m).__name__ == "_PyMutator"]
        assert len(mutators) == 1
        start = rs.read_decisions(ours[0].trace)
        baseline = default_schedule(task.mod["main"], target)[0].trace
        for parent in (ours[0].trace, baseline):
            child = mutators[0].apply(parent)
            assert child is not None
            moved = [a != b for a, b in zip(rs.read_decisions(child), start)]
            assert sum(moved) == 1
        generic = next(s for s in spaces if rs.read_decisions(s.trace) is None)
        assert mutators[0].apply(generic.trace) is None  # the generic space is left to MetaSchedule's mutators


def test_applied_rule_space_records_match_onnxruntime(deep, deep_tasks, tmp_path):
    """Records at non-default points replay through compile (tuning/apply.py) and compute the model."""
    import tvm_autoglm
    from tvm.s_tir import meta_schedule as ms

    target, tasks = deep_tasks
    db = dbmod.open_db(tmp_path / "db")
    for task in tasks:
        sch, _ = rs.build_point(task.mod, target, [1, 1])
        workload = db.commit_workload(task.mod)
        args = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-6], target, args))
    model = tvm_autoglm.compile(deep, tuning_db=str(tmp_path / "db"), use_shipped_schedules=False)
    assert model.manifest["tuning"]["records_applied"] == 2
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    want = ort.InferenceSession(deep, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.run(x=x)["y"], want, rtol=1e-4, atol=1e-5)


def test_rule_space_off_measures_only_generic_points(tiny_model, tmp_path):
    from tvm_autoglm import tune

    tune(tiny_model, trials=8, tuning_db=tmp_path / "db", seed=0, progress=False, use_shipped_schedules=False,
         rule_space=False, check_in_model=False, remeasure_top=0)
    records = dbmod.open_db(tmp_path / "db", create=False).get_all_tuning_records()
    assert not [r for r in records if rs.read_decisions(r.trace)]


@pytest.mark.slow  # 1-2 min on 2 cores; rule_space is off by default
def test_same_seed_gives_the_same_rule_space_choices(tuned, tiny_model, tmp_path):
    """First batch only, from copies of one database (later batches follow measured times)."""
    from tvm_autoglm import tune

    _, db = tuned
    new = []
    for run in ("a", "b"):
        copy = tmp_path / run
        shutil.copytree(db, copy, ignore=shutil.ignore_patterns("logs"))
        before = {str(r.trace) for r in dbmod.open_db(copy, create=False).get_all_tuning_records()}
        tune(tiny_model, trials=8, tuning_db=copy, seed=11, progress=False, use_shipped_schedules=False,
             check_in_model=False, remeasure_top=0, rule_space=True)
        new.append(sorted(str(r.trace) for r in dbmod.open_db(copy, create=False).get_all_tuning_records()
                          if str(r.trace) not in before))
    assert len(new[0]) == 8 and new[0] == new[1]
