"""Step 3 of a tuning run: the MetaSchedule search (evolutionary search, XGBoost cost model).

Control that MetaSchedule lacks is layered on through two adapters around one
``scheduler.TaskScheduler``: a task scheduler that asks it which task to measure next,
and a measure callback that runs after every measured batch and reports the batch to
it (budgets, per-task early stopping, the tuning curve) and shows the live progress
line. Stopping works by the scheduler answering -1, so MetaSchedule exits its loop
normally and every record measured so far is already on disk (JSONDatabase appends
per record).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

from ..native_log import native_stderr_to_file
from . import database as dbmod
from .progress import fmt_duration
from .scheduler import TaskScheduler


def run_search(prep, plan: TaskScheduler, contexts, weights, builder, runner, *, seed: int, cores: int, on_batch=None) -> str:
    """Measures until ``plan`` says stop; returns the stop reason ("trials", "time", "converged", "interrupted")."""
    from tvm.s_tir import meta_schedule as ms

    cost_model = ms.cost_model.XGBModel(num_tuning_cores=cores, tree_method="auto")
    warm = warm_start(cost_model, prep.database, contexts, prep.keep)
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [
        _progress_callback(plan, prep, on_batch)]
    ms_scheduler = _joining_scheduler(plan)
    n_skipped = sum(1 for row in prep.skipped if "reason" not in row)  # negligible: rows without a reason
    prep.say(f"{len(contexts)} kernels to tune ({n_skipped} negligible skipped), {dbmod.count_records(prep.work_dir)} "
             f"records in {prep.work_dir}, cost model warmed on {warm}")
    try:
        with _stop_on_first_sigint(plan, prep), _seeded_numpy(seed), native_stderr_to_file(prep.native_log):
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(prep.work_dir),
                max_trials_global=1 << 30,  # budgets are enforced by the TaskScheduler
                max_trials_per_task=None,
                num_trials_per_iter=plan.per_batch,
                builder=builder,
                runner=runner,
                database=prep.database,
                cost_model=cost_model,
                measure_callbacks=callbacks,
                task_scheduler=ms_scheduler,
            )
    except KeyboardInterrupt:
        plan.request_stop("interrupted")
    except Exception:
        # Our stop (and a SIGINT) inside the native loop surface as FFI errors.
        if plan.stop_reason is None:
            raise
    return plan.final_reason()


def _joining_scheduler(plan: TaskScheduler):
    """A MetaSchedule task scheduler that joins each batch before choosing the next (``plan`` chooses).

    Joining first means records land batch by batch, and measurement never overlaps a build
    (which matters on a 2-core host).
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class JoiningScheduler(ms.task_scheduler.PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.running = None

        def next_task_id(self) -> int:
            tasks = self._outer().tasks_
            if self.running is not None and not tasks[self.running].is_terminated:
                self.join_running_task(self.running)
            chosen = plan.next_task([t.is_terminated for t in tasks])
            self.running = chosen if chosen >= 0 else None
            return chosen

    return JoiningScheduler()


def _progress_callback(plan: TaskScheduler, prep, on_batch):
    """The measure callback: reports each batch to ``plan``, retires a stalled task, updates the progress line."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class ReportBatch(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            times = [res.run_secs if res.error_msg is None else None for res in runner_results]
            elapsed = time.monotonic() - prep.start_wall
            outcome = plan.record_batch(task_id, times, elapsed)
            if outcome.retire_task and not task_scheduler.tasks_[task_id].is_terminated:
                task_scheduler.terminate_task(task_id)
            prep.line.update(progress_text(plan, elapsed, prep.keep[task_id].name))
            if on_batch is not None:
                on_batch(dict(plan.curve[-1]))
            # A budget stop is seen by the scheduler's next task choice, which ends the loop
            # normally (raising here would drop any batch not yet joined).

    return ReportBatch()


def progress_text(plan: TaskScheduler, elapsed: float, task_name: str) -> str:
    """The live line: trials, elapsed, ETA, estimated latency of the tuned kernels, current kernel."""
    limit = plan.budget.trials
    done_txt = f"{plan.trials}/{limit}" if limit is not None else f"{plan.trials}"
    now, first = plan.estimate_ms(plan.best), plan.start_estimate_ms()
    n = len(plan.best)
    est_txt = (f"est {now:.2f} ms (start {first:.2f} ms)" if now is not None and first is not None
               else f"est ? ({sum(b is not None for b in plan.best)}/{n} kernels measured)")
    return f"{done_txt} trials | {fmt_duration(elapsed)} elapsed | ETA {fmt_duration(plan.eta_s(elapsed))} | {est_txt} | {task_name[:40]}"


@contextlib.contextmanager
def _stop_on_first_sigint(plan: TaskScheduler, prep):
    """The first Ctrl-C only asks the scheduler to stop; a second aborts at once.

    The scheduler's next choice returns -1 after joining the batch in flight, so MetaSchedule's
    loop ends normally. Raising at the first instead unwound through whatever native frame the
    main thread was in (the handler runs in the next Python callback MetaSchedule makes, e.g. a
    cost-model update or our measure callback): about one run in three then died with SIGSEGV
    (TVM's own handler) instead of exiting 130.
    """

    def on_sigint(signum, frame):
        if plan.stop_reason == "interrupted":
            raise KeyboardInterrupt
        plan.request_stop("interrupted")
        prep.say("interrupted: stopping after the batch being measured (Ctrl-C again to abort now)")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _seeded_numpy(seed: int):
    """XGBModel predicts with numpy's global generator until it has enough samples: seed it for
    this run (and give the caller's state back afterwards) so the seed decides the choices."""
    import numpy as np

    rng_state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(rng_state)


def warm_start(cost_model, database, contexts, keep) -> int:
    """Trains the cost model on records already in the database; returns how many."""
    from tvm.s_tir import meta_schedule as ms

    total = 0
    for ctx, t in zip(contexts, keep):
        if not database.has_workload(t.mod):
            continue
        records = database.get_top_k(database.commit_workload(t.mod), 512)
        cands, results = [], []
        for rec in records:
            try:
                cands.append(rec.as_measure_candidate())
            except Exception:  # noqa: BLE001 - a record from an older TVM may not replay
                continue
            results.append(ms.runner.RunnerResult(run_secs=rec.run_secs, error_msg=None))
        if cands:
            try:
                cost_model.update(ctx, cands, results)
                total += len(cands)
            except Exception:  # noqa: BLE001 - warm start is an optimisation only
                pass
    return total
