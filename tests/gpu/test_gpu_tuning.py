"""Tuning on CUDA targets without a GPU: task selection, dlight baselines, records and vetoes applied.

What runs on a lent GPU (benchmarks/gpu_tune.py) rests on these: the few costliest
kernels are chosen, dlight's schedule of each is the baseline record (its trace
replays to exactly the kernel an untuned build runs), and ``compile`` applies a GPU
database, a shipped ``schedules/gpu-hopper/`` one and its vetoes.
"""

from __future__ import annotations

import json

import pytest
import tvm
import tvm_ffi

from gpu_models import bert_layer
from tvm_autoglm.gpu import default_gpu_schedule
from tvm_autoglm.pipeline import build_relax, schedule
from tvm_autoglm.quantize import apply_quantization, passes_off_for
from tvm_autoglm.targets import load_target
from tvm_autoglm.tuning import tasks as taskmod
from tvm_autoglm.tuning.baseline import commit_baselines, default_schedule_for, is_baseline_trace


def _task(name, share):
    return taskmod.Task(name=name, weight=1, flops=share * 100, share=share, extracted=None)


def test_top_tasks_takes_the_costliest_over_the_share():
    tasks = [_task("ln", 0.01), _task("ffn_up", 0.30), _task("qkv", 0.25), _task("attn", 0.40), _task("ffn_down", 0.04)]
    chosen, rest = taskmod.top_tasks(tasks, 3, min_share=0.02)
    assert [t.name for t in chosen] == ["attn", "ffn_up", "qkv"]
    assert [t.name for t in rest] == ["ffn_down", "ln"]
    chosen, rest = taskmod.top_tasks(tasks, 10, min_share=0.02)  # the share floor drops "ln" even with room
    assert [t.name for t in chosen] == ["attn", "ffn_up", "qkv", "ffn_down"] and [t.name for t in rest] == ["ln"]
    chosen, _ = taskmod.top_tasks(tasks, None)
    assert len(chosen) == 5


def test_top_tasks_refuses_a_count_below_one():
    with pytest.raises(ValueError, match="count must be >= 1 \\(got 0\\)"):
        taskmod.top_tasks([_task("a", 1.0)], 0)


@pytest.fixture(scope="module")
def hopper():
    return load_target("gpu-hopper")


@pytest.fixture(scope="module")
def fp16_build(hopper):
    """The bert layer at fp16 for gpu-hopper, fused: the kernels compile --quantize fp16 schedules."""
    build = build_relax(bert_layer(seq=96, dim=128, ffn=256), hopper, 3, None, passes_off_for("fp16"))
    return apply_quantization(build, "fp16")


@pytest.fixture(scope="module")
def fp16_tasks(fp16_build, hopper):
    keep, skip = taskmod.extract(fp16_build.mod, hopper.tvm_target(), min_share=0.0)
    return keep + skip


def test_dlight_baselines_replay_to_the_untuned_kernels(fp16_tasks, hopper):
    """Each kernel's dlight schedule has a sampling-free trace that replays to the same kernel."""
    from tvm import s_tir

    target = hopper.tvm_target()
    assert default_schedule_for(target) is default_gpu_schedule
    rules = set()
    for task in fp16_tasks:
        sch, rule = default_gpu_schedule(task.mod["main"], target)
        assert sch is not None, task.name
        rules.add(rule)
        assert is_baseline_trace(sch.trace), task.name
        replay = s_tir.Schedule(task.mod)
        sch.trace.apply_to_schedule(replay, remove_postproc=False)
        assert tvm_ffi.structural_equal(replay.mod["main"], sch.mod["main"]), task.name
    assert "Matmul" in rules  # the GEMMs took dlight's matmul rule (tensor cores at fp16), not Fallback


def test_commit_baselines_uses_dlight_on_cuda(fp16_tasks, hopper, tmp_path):
    """The baseline step schedules a CUDA task with dlight (not the CPU rules); a failed build commits nothing."""
    from tvm.s_tir import meta_schedule as ms

    class FailingBuilder:
        def __init__(self):
            self.inputs = []

        def build(self, inputs):
            self.inputs.extend(inputs)
            return [ms.builder.BuilderResult(None, "no nvcc in this test") for _ in inputs]

    database = ms.database.JSONDatabase(work_dir=str(tmp_path), allow_missing=True, module_equality="structural")
    builder = FailingBuilder()
    gemms = [t for t in fp16_tasks if "matmul" in t.name and "softmax" not in t.name][:2]
    assert gemms
    results = commit_baselines(gemms, database, hopper.tvm_target(), builder, runner=None)
    assert [r.rule for r in results] == ["Matmul"] * len(gemms)
    assert [r.status for r in results] == ["build-failed"] * len(gemms)
    assert len(builder.inputs) == len(gemms) and str(builder.inputs[0].target.kind.name) == "cuda"
    assert len(database) == 0


def _record_dlight_baseline(db_dir, task, target, seconds=1e-5):
    """A database holding dlight's schedule of one task, as gpu_tune's baseline step commits it."""
    from tvm.s_tir import meta_schedule as ms

    db_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(db_dir), allow_missing=True, module_equality="structural")
    sch, _ = default_gpu_schedule(task.mod["main"], target)
    workload = database.commit_workload(task.mod)
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [seconds], target, args_info))
    return sch.mod["main"]


def _gemm_kernel(fp16_build, task):
    """The module's kernel of ``task`` (by structure: names differ between extraction and the module)."""
    from tvm_autoglm.tuning.in_model import workload_key

    key = workload_key(task.mod["main"])
    for gv, func in fp16_build.mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and workload_key(func) == key:
            return gv
    raise AssertionError(f"no kernel of {task.name} in the module")


def test_a_gpu_database_applies_to_a_cuda_build(fp16_build, fp16_tasks, hopper, tmp_path):
    task = next(t for t in fp16_tasks if "matmul" in t.name and "softmax" not in t.name)
    expected = _record_dlight_baseline(tmp_path / "db", task, hopper.tvm_target())
    scheduled = schedule(fp16_build, str(tmp_path / "db"), use_shipped_schedules=False)
    assert scheduled.tuning["records_applied"] >= 1
    gv = _gemm_kernel(fp16_build, task)
    applied = scheduled.mod[gv].without_attr("tirx.is_scheduled")
    assert tvm_ffi.structural_equal(applied.without_attr("global_symbol"), expected.without_attr("global_symbol"))


def test_shipped_gpu_hopper_schedules_apply_and_their_vetoes_hold(fp16_build, fp16_tasks, hopper, tmp_path, monkeypatch):
    """schedules/gpu-hopper/<model>/ applies like the CPU ones; a kernel its in_model_veto.json names keeps dlight's."""
    from tvm_autoglm.tuning.in_model import VETO_FILE, workload_key

    task = next(t for t in fp16_tasks if "matmul" in t.name and "softmax" not in t.name)
    shipped = tmp_path / "schedules" / "gpu-hopper" / "bert"
    _record_dlight_baseline(shipped, task, hopper.tvm_target())
    monkeypatch.setenv("AUTOGLM_SCHEDULES_DIR", str(tmp_path / "schedules"))
    scheduled = schedule(fp16_build, None, use_shipped_schedules=True)
    assert scheduled.tuning["shipped_schedules"] == [str(shipped)]
    assert scheduled.tuning["records_applied"] >= 1
    applied_before = scheduled.tuning["records_applied"]

    veto = {"format": 1, "vetoed": {workload_key(task.mod["main"]): {"task": task.name, "tuned_ms": 2.0, "default_ms": 1.0}}}
    (shipped / VETO_FILE).write_text(json.dumps(veto))
    vetoed = schedule(fp16_build, None, use_shipped_schedules=True)
    assert vetoed.tuning["vetoed"] >= 1
    assert vetoed.tuning["records_applied"] < applied_before
    # the vetoed kernel is still scheduled (by dlight) and bound: the guard ran after the veto
    from tvm_autoglm.gpu import unbound_kernels

    assert unbound_kernels(vetoed.mod) == []


def _benchmark(name):
    """A script of benchmarks/ as a module (they are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_sizes_per_model_and_tuned_row_labels():
    bench = _benchmark("bench_gpu")
    assert bench.model_size(None, "bert") == "large" and bench.model_size(None, "resnet50") == "base"
    assert bench.model_size("tiny", "resnet50") == "tiny"
    assert bench.model_size("bert=tiny", "bert") == "tiny" and bench.model_size("bert=tiny", "resnet50") == "base"
    with pytest.raises(SystemExit, match=r"unknown model\(s\) \['gpt'\]"):
        bench.model_size("gpt=tiny", "bert")
    assert bench.engine_name(True, None) == "tvm_autoglm"
    assert bench.engine_name(True, "/db") == "tvm_autoglm tuned"
    assert bench.engine_name(False, "/db") == "tvm_autoglm tuned (no cuda graph)"


def test_gpu_tune_dry_summary_counts_builds_per_task():
    tune = _benchmark("gpu_tune")
    rows = [
        {"task": "gemm", "kind": "baseline", "rule": "Matmul", "built": True},
        {"task": "gemm", "kind": "candidate", "built": True},
        {"task": "gemm", "kind": "candidate", "built": False, "error": "lowering failed"},
        {"task": "gemm", "kind": "candidate", "error": "a postprocessor rejected this draw"},
        {"task": "attn", "kind": "baseline", "rule": "Fallback", "built": False, "error": "nvcc"},
    ]
    summary = tune.summarize(rows)
    assert summary["gemm"] == {"rule": "Matmul", "baseline_built": True, "candidates": 3, "candidates_built": 1, "rejected_by_postproc": 1}
    assert summary["attn"]["baseline_built"] is False and summary["attn"]["candidates"] == 0
