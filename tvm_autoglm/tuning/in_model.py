"""Check tuned kernels in the model they were tuned for; veto records that lose there.

Why: a kernel timed alone (even with caches flushed and re-measured side by
side) can rank schedules differently from the same kernel inside the model,
where it shares caches, memory bandwidth and the thread pool with its
neighbours. Measured on bert-base: the FFN down-projection's search record beat
the default schedule in isolation (4.79 vs 6.16 ms) and the tuned build was 16 %
slower than the untuned one. After tuning, both builds are profiled per kernel
(interleaved), and a kernel whose search record is slower in the model than the
default schedule is vetoed: ``in_model_veto.json`` in the database folder lists
it by workload, and compile keeps the default schedule for it. A later tune
re-checks and lifts a veto whose kernel now wins.
"""

from __future__ import annotations

from .vetoes import VETO_FILE, read_vetoes, workload_key, write_vetoes  # noqa: F401  (the check's file; tests read them here)


def check(build, db_dir, task_names, rounds: int = 3, repeat: int = 5, margin: float = 0.02, progress=None) -> list[dict]:
    """Profile the untuned and tuned builds per kernel; update the veto list; return one row per task.

    A task is vetoed when its tuned kernel is more than ``margin`` slower in the model.
    """
    import tvm

    from ..index_ranges import index_ranges
    from ..measure.profile import interleaved_kernel_ms
    from ..pipeline import compile_model
    from ..runtime.inputs import example_inputs
    from ..runtime.session import Session

    if progress:
        progress("checking the tuned kernels inside the model (two builds, per-kernel profile) ...")
    sessions = {}
    for label, db in (("default", None), ("tuned", str(db_dir))):
        done = compile_model(build, tuning_db=db, use_shipped_schedules=False, honor_vetoes=False)
        sessions[label] = (Session(done.executable, done.manifest), done.scheduled)
    inputs = example_inputs(build.inputs, 0, index_ranges=index_ranges(build.onnx_model))
    per_kernel, _ = interleaved_kernel_ms({label: session for label, (session, _) in sessions.items()}, inputs, rounds, repeat=repeat)

    def ms(label, name):
        values = sorted(per_kernel[label].get(name, []))
        return values[len(values) // 2] if values else None

    names = {g.name_hint for g in build.mod.get_global_vars()}
    vetoed = read_vetoes(db_dir)
    rows = []
    for name in task_names:
        if name not in names or not isinstance(build.mod[name], tvm.tirx.PrimFunc):
            continue
        key = workload_key(build.mod[name])
        default_ms, tuned_ms = ms("default", name), ms("tuned", name)
        if default_ms is None or tuned_ms is None:
            continue
        lose = tuned_ms > default_ms * (1 + margin)
        if lose:
            vetoed[key] = {"task": name, "tuned_ms": round(tuned_ms, 4), "default_ms": round(default_ms, 4)}
        else:
            vetoed.pop(key, None)
        rows.append({"task": name, "default_ms": round(default_ms, 4), "tuned_ms": round(tuned_ms, 4), "vetoed": lose})
    write_vetoes(db_dir, vetoed)
    return rows
