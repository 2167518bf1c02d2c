"""MetaSchedule chooses NPU tiles, measured in simulated cycles (ms_tune)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tvm_autoglm
from tvm_autoglm.npu import ms_tune
from tvm_autoglm.npu.codegen import NAIVE, MatmulShape, TileConfig, matmul_program
from tvm_autoglm.npu.config import machine_from
from tvm_autoglm.npu.partition import npu_ops
from tvm_autoglm.npu.report import collect
from tvm_autoglm.npu.sim import time_program

from .models import transformer_block

MACHINE = machine_from(None)
# a dense layer with bias, small enough that 12 trials cover a fair part of its space
SHAPE = MatmulShape(1, 64, 128, 96, False, "float32", "float16", "float32", bias=True)
TRIALS = 12


def _records(path):
    lines = (path / "database_tuning_record.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    db = tmp_path_factory.mktemp("npu_db")
    return db, ms_tune.tune_shapes([SHAPE], MACHINE, db, trials=TRIALS, seed=0, trials_per_iter=6)


def test_tuned_tile_beats_naive_and_matches_simulator(tuned):
    db, result = tuned
    assert result.trials == TRIALS and len(result.measured) == TRIALS
    best = result.best[ms_tune.task_name(SHAPE)]
    cfg = TileConfig(**best["tile"])
    cycles = time_program(matmul_program(SHAPE, cfg, MACHINE))
    assert best["cycles"] == cycles == min(c for _, c in result.measured)
    assert cycles <= time_program(matmul_program(SHAPE, NAIVE, MACHINE))


def test_records_hold_simulated_cycles_over_clock(tuned):
    db, result = tuned
    records = _records(db)
    assert len(records) == TRIALS == result.records_after - result.records_before
    measured_secs = sorted(c / (MACHINE.clock_mhz * 1e6) for _, c in result.measured)
    # record = [workload index, [trace, run_secs, target, args_info]]
    recorded_secs = sorted(rec[1][1][0] for rec in records)
    np.testing.assert_allclose(recorded_secs, measured_secs, rtol=1e-12)


def test_second_run_measures_nothing_twice(tuned, tmp_path):
    db, first = tuned
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    second = ms_tune.tune_shapes([SHAPE], MACHINE, copy, trials=6, seed=1, trials_per_iter=6)
    assert second.records_before == TRIALS
    seen = [cfg for cfg, _ in first.measured] + [cfg for cfg, _ in second.measured]
    assert len(seen) == len(set(seen)), "a tile configuration was measured twice"
    assert second.records_after == TRIALS + second.trials


def test_same_seed_same_choice(tuned, tmp_path):
    _, first = tuned
    again = ms_tune.tune_shapes([SHAPE], MACHINE, tmp_path / "db", trials=TRIALS, seed=0, trials_per_iter=6)
    assert [cfg for cfg, _ in again.measured] == [cfg for cfg, _ in first.measured]
    assert again.best == first.best


def test_postproc_rejects_configs_that_overflow():
    assert not ms_tune.valid(SHAPE, TileConfig(256, 256, 512, 3), MACHINE)
    assert ms_tune.valid(SHAPE, TileConfig(64, 128, 96, 2), MACHINE)


def test_compile_uses_records_and_run_counts_their_cycles(tmp_path):
    """Tune a tiny transformer's NPU matmuls; the compiled model's per-op simulated cycles
    equal the records' run_secs x clock, and outputs equal the untuned build's."""
    model = transformer_block()
    db = tmp_path / "db"
    result = ms_tune.tune(model, db, trials=8, seed=0, trials_per_iter=8)
    assert result.trials == 8 and result.best
    # compile(tuning_db=...) (= `auto-glm compile --tuning-db`) applies the NPU records during
    # partitioning; the host kernels find no record there and keep their default schedules.
    compiled = tvm_autoglm.compile(model, target="npu-sim", opt_level=3, tuning_db=str(db))
    ops = npu_ops(compiled.build.mod)
    from_records = [op for op in ops if op["tile_source"] == "metaschedule"]
    assert from_records and "(metaschedule)" in "\n".join(compiled.manifest["tuning"]["npu"])
    x = np.random.default_rng(0).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    report = collect(compiled._session, {"x": x})
    ran = {op["op_id"]: op["cycles"] for op in report["ops"]}
    best_by_task = {name: b for name, b in result.best.items()}
    for op in from_records:
        shape = MatmulShape(**op["workload"])
        best = best_by_task[ms_tune.task_name(shape, op["route"])]
        assert op["tile"] == best["tile"]
        assert ran[op["op_id"]] == best["cycles"] == op["estimated_cycles"]
    plain = tvm_autoglm.compile(model, target="npu-sim", opt_level=3)
    np.testing.assert_allclose(compiled.run(x=x)["y"], plain.run(x=x)["y"], rtol=1e-5, atol=1e-5)


def test_missing_database_is_a_clear_error(tmp_path):
    from tvm_autoglm.errors import AutoGLMError

    with pytest.raises(AutoGLMError, match="not found"):
        ms_tune.TileRecords(tmp_path / "nope")
    with pytest.raises(AutoGLMError, match="not found"):  # what compile_model(..., tuning_db=...) opens for npu-sim
        tvm_autoglm.compile(transformer_block(), target="npu-sim", tuning_db=str(tmp_path / "nope"))


def test_driver_entry_returns_a_tune_result(tmp_path):
    """What `auto-glm tune --target npu-sim` runs (tuning.driver dispatches npu targets here)."""
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.targets import load_target

    spec = load_target("npu-sim")
    result = ms_tune.tune_for_driver(transformer_block(), spec, trials=4, tuning_db=str(tmp_path / "db"), progress=False)
    assert result.target == "npu-sim" and result.trials == 4 and result.records_after == 4
    measured = [t for t in result.tasks if t["best_us"] is not None]
    assert measured and all(t["best_us"] == pytest.approx(t["cycles"] / MACHINE.clock_mhz) for t in measured)
    with pytest.raises(AutoGLMError, match="time-budget"):
        ms_tune.tune_for_driver(transformer_block(), spec, time_budget="1m", tuning_db=str(tmp_path / "db2"))


def test_tune_api_dispatches_npu_targets(tmp_path):
    """`auto-glm tune --target npu-sim` goes through tvm_autoglm.tune: records in simulated time."""
    from tvm_autoglm.tuning import database as dbmod

    result = tvm_autoglm.tune(transformer_block(), target="npu-sim", trials=4, tuning_db=tmp_path / "db", seed=0, progress=False)
    assert result.target == "npu-sim" and result.trials == 4
    records = dbmod.open_db(tmp_path / "db", create=False).get_all_tuning_records()
    assert len(records) == 4 and all(float(r.run_secs[0]) > 0 for r in records)


def test_block_route_tuning_tensorizes_and_records_replayed_cycles(tmp_path):
    """The tensorize route's design space: sample_perfect_tile, then sch.tensorize with the block intrinsic of
    the sampled size (in a postprocessor, so mutated sizes re-tensorize); run_secs = block-call cycles / clock."""
    from tvm.s_tir import Schedule

    from tvm_autoglm.npu.tensorize import time_blocks

    shape = MatmulShape(1, 64, 128, 256, False, "int8", "int8", "int32")
    result = ms_tune.tune_shapes([shape], MACHINE, tmp_path / "db", trials=6, seed=0, trials_per_iter=6, routes=["tensorize"])
    assert result.trials == 6
    best = result.best[ms_tune.task_name(shape, "tensorize")]
    assert all(ms_tune.valid_block(shape, cfg, MACHINE) for cfg, _ in result.measured)
    assert all(cycles == time_blocks(shape, cfg, MACHINE) for cfg, cycles in result.measured)
    assert best["cycles"] == min(c for _, c in result.measured)
    cfg = ms_tune.TileRecords(tmp_path / "db").lookup_block(shape, MACHINE)
    assert cfg.to_json() == best["tile"]
    # the measured candidates really were tensorized: replaying a record with its postprocessors
    # yields the block intrinsic's extern call
    db = ms_tune.TileRecords(tmp_path / "db").db
    rec = db.get_top_k(db.commit_workload(ms_tune.workload(shape, MACHINE, "tensorize")), 1)[0]
    sch = Schedule(ms_tune.workload(shape, MACHINE, "tensorize"))
    rec.trace.apply_to_schedule(sch, remove_postproc=True)
    assert ms_tune.plugins.TensorizeBlocks().apply(sch) and "npu_gemm_block" in sch.mod.script() and "npu_acc_zero" in sch.mod.script()
