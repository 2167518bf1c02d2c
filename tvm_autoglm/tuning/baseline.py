"""The default rule's schedule of each task, measured and committed as a tuning record.

Why: the compiler applies the database's best record in place of our default
schedule rule. With a short search, MetaSchedule's best can be slower than the
rule (bert-base: 1280 ms tuned after 24 trials vs 790 ms untuned), and a "tuned"
build then loses to an untuned one. Measuring the rule's schedule with the same
builder and runner and committing its trace as an ordinary record makes the
database's best never worse than the default: a search record wins only by
being faster. The trace also seeds the evolutionary search's first population
(``PickBestFromDatabase``), and the tuning curve starts from the default build.

A baseline record is recognisable by its trace: our rules (and dlight's GPU
rules, the untuned schedule on CUDA) use no sampling instructions,
MetaSchedule's design spaces always do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Baseline:
    task: str
    rule: str | None
    seconds: float | None  # measured mean run time; None when not measured
    status: str  # "measured" | "present" | "no-rule" | "build-failed" | "run-failed"
    error: str | None = None


def is_baseline_trace(trace) -> bool:
    """True for a trace with no sampling decisions (our rules' schedules)."""
    return not any(inst.kind.name.startswith("Sample") for inst in trace.insts)


def best_is_search_record(database, mod) -> bool:
    """True when the fastest record of ``mod``'s kernel came from the search, not from our rules."""
    if not database.has_workload(mod):
        return False
    top = database.get_top_k(database.commit_workload(mod), 1)
    return bool(top) and not is_baseline_trace(top[0].trace)


def _trace_text(trace) -> str:
    return str(trace)


def _has_trace(database, workload, text: str) -> bool:
    for rec in database.get_top_k(workload, 1 << 20):
        try:
            if is_baseline_trace(rec.trace) and _trace_text(rec.trace) == text:
                return True
        except Exception:  # noqa: BLE001 - an unreadable record is not ours
            continue
    return False


def baseline_seconds(database, mod) -> float | None:
    """Mean run time of the best baseline record of ``mod`` in ``database``, if any."""
    try:
        if not database.has_workload(mod):
            return None
        records = database.get_top_k(database.commit_workload(mod), 1 << 20)
    except Exception:  # noqa: BLE001 - reporting only
        return None
    for rec in records:  # best first
        if rec.run_secs and is_baseline_trace(rec.trace):
            secs = [float(s) for s in rec.run_secs]
            return sum(secs) / len(secs)
    return None


def commit_baselines(tasks, database, tvm_target, builder, runner, progress=None) -> list[Baseline]:
    """Measure the default schedule of every task lacking one in ``database``; commit each.

    Builds run in one batch (the builder's worker pool uses every core); each
    record is committed as soon as its measurement returns, so an interrupt keeps
    the ones already measured. Returns one ``Baseline`` per task, in order.
    """
    from tvm.s_tir import meta_schedule as ms

    default_schedule = default_schedule_for(tvm_target)
    out: list[Baseline] = []
    pending = []  # (index, schedule, workload)
    for i, task in enumerate(tasks):
        func = task.mod["main"]
        sch, rule = default_schedule(func, tvm_target)
        if sch is None:
            out.append(Baseline(task.name, None, None, "no-rule"))
            continue
        workload = database.commit_workload(task.mod)
        if _has_trace(database, workload, _trace_text(sch.trace)):
            out.append(Baseline(task.name, rule, None, "present"))
            continue
        out.append(Baseline(task.name, rule, None, "pending"))
        pending.append((i, sch, workload))
    if not pending:
        return out

    if progress:
        progress(f"building the default schedules of {len(pending)} kernel(s) as baselines ...")
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for _, sch, _ in pending])
    for n, ((i, sch, workload), result) in enumerate(zip(pending, built), 1):
        if result.error_msg is not None:
            out[i].status = "build-failed"
            out[i].error = result.error_msg[-400:]
            continue
        args_info = ms.arg_info.ArgInfo.from_prim_func(tasks[i].mod["main"])
        try:
            future = runner.run([ms.runner.RunnerInput(result.artifact_path, device_type=_device_type(tvm_target), args_info=args_info)])[0]
            measured = future.result()
        finally:
            _remove_artifact(result.artifact_path)
        if measured.error_msg is not None or not measured.run_secs:
            out[i].status = "run-failed"
            out[i].error = (measured.error_msg or "no run time")[-400:]
            continue
        secs = [float(s) for s in measured.run_secs]
        database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, workload, measured.run_secs, tvm_target, ms.arg_info.ArgInfo.from_prim_func(tasks[i].mod["main"]))
        )
        out[i].seconds = sum(secs) / len(secs)
        out[i].status = "measured"
        if progress:
            progress(f"baseline {n}/{len(pending)}: {tasks[i].name[:40]} {out[i].seconds * 1e6:.1f} us ({out[i].rule})")
    return out


def default_schedule_for(tvm_target):
    """The function giving a kernel's untuned schedule on this target: ``(Schedule, rule) or (None, None)``.

    CPU: our rules (``schedule_rules``). CUDA: dlight's rules as the compile applies them
    (``gpu.default_gpu_schedule``: the ``sm_90a`` -> ``sm_90`` view, a rule that binds only part
    of a kernel skipped), so a GPU baseline record is exactly what an untuned GPU build runs.
    """
    if tvm_target.kind.name == "cuda":
        from ..gpu import default_gpu_schedule

        return default_gpu_schedule
    from ..schedule_rules import default_schedule

    return default_schedule


def _device_type(tvm_target) -> str:
    # The runner opens tvm.runtime.device(device_type): "cpu"/"cuda", not the target kind "llvm".
    return "cuda" if tvm_target.kind.name == "cuda" else "cpu"


def _remove_artifact(path) -> None:
    import os
    import shutil

    if not path:
        return
    folder = os.path.dirname(path)
    try:
        if folder and os.path.basename(folder).startswith("tmp"):
            shutil.rmtree(folder, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
    except OSError:
        pass
