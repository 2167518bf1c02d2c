"""``tuning.driver.tune`` for an NPU target: same arguments, same ``TuneResult``.

Kept apart from the loop so the tuning driver's target-kind dispatch has one small
thing to call (and to re-point when the backends own that dispatch).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...errors import AutoGLMError
from .loop import model_shapes, tune_shapes
from .space import task_name


def tune_for_driver(model, spec, opt_level: int = 3, input_shapes=None, trials: int | None = None, time_budget=None,
                    tuning_db=None, seed: int = 0, rpc_tracker=None, progress: bool = True, **_ignored):
    """``tuning.driver.tune`` for an NPU target: same arguments, same TuneResult (tasks with best_us)."""
    import time

    from ...tuning import database as dbmod
    from ...tuning.result import TuneResult

    if time_budget is not None:
        raise AutoGLMError(f"target {spec.name}: --time-budget is not supported; give --trials (one trial = one simulator run)")
    if rpc_tracker:
        raise AutoGLMError(f"target {spec.name} is measured by the simulator in-process; --rpc-tracker does not apply")
    start = time.monotonic()
    pairs, counts, machine = model_shapes(model, spec, opt_level, input_shapes, with_routes=True)
    shapes = pairs
    if not shapes:
        raise AutoGLMError(f"{spec.name}: the model has no NPU matmuls to tune")
    trials = 32 * len(shapes) if trials is None else trials
    work_dir = Path(tuning_db) if tuning_db else dbmod.default_dir(spec.name)
    if progress:
        print(f"npu tune: {len(shapes)} NPU matmul shapes, {trials} simulator trials -> {work_dir}", file=sys.stderr, flush=True)
    res = tune_shapes([p[0] for p in pairs], machine, work_dir, trials=trials, seed=seed,
                      weights=[float(counts[p]) for p in pairs], routes=[p[1] for p in pairs])
    tasks = []
    for shape, route in pairs:
        best = res.best.get(task_name(shape, route))
        tasks.append({
            "name": task_name(shape, route), "count": counts[(shape, route)], "tile": best["tile"] if best else None,
            "cycles": best["cycles"] if best else None, "best_us": best["run_secs"] * 1e6 if best else None,
        })
    total = [t["best_us"] * t["count"] for t in tasks if t["best_us"] is not None]
    return TuneResult(
        database=str(work_dir), target=spec.name, trials=res.trials, records_before=res.records_before,
        records_after=res.records_after, elapsed_s=time.monotonic() - start, stop_reason="trials",
        estimated_ms_start=None, estimated_ms_end=(sum(total) / 1e3) if len(total) == len(tasks) else None,
        tasks=tasks,
    )
