"""The tuning run: tasks -> MetaSchedule (our task scheduler, evolutionary search,
XGBoost cost model) -> records appended to a JSON database.

``tune`` runs named steps, each in its own module:

1. prepare (``prepare.py``): database folder and lock, fused module, tasks, search spaces;
2. baselines (``steps.py`` over ``baseline.py``): each kernel's default schedule, recorded;
3. search (``search.py`` driving ``scheduler.py``): budgets, early stopping, Ctrl-C;
4. verify (``steps.py`` over ``verify.py``): leading records re-timed beside the baseline;
5. in-model check (``steps.py`` over ``in_model.py``): a record that loses in the model is vetoed;
6. result (``result.py``): one ``TuneResult`` for every way the run ends.

Every record is on disk as soon as it is measured (JSONDatabase appends per record),
so a stopped or killed run resumes from its database.
"""

from __future__ import annotations

import time

from . import database as dbmod
from .prepare import build_for_tuning
from .progress import ProgressLine, fmt_duration
from .result import TuneResult, make_result, task_json
from .scheduler import Budget, TaskScheduler, parse_duration

__all__ = ["tune", "TuneResult", "parse_duration"]

# benchmarks/gpu_tune.py imports the old private name
_build_for_tuning = build_for_tuning


def tune(
    model,
    target="cpu",
    opt_level: int = 3,
    input_shapes=None,
    trials: int | None = None,
    time_budget=None,
    tuning_db=None,
    seed: int = 0,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    progress: bool = True,
    *,
    use_shipped_schedules: bool = True,
    min_share: float = 0.005,
    early_stop_trials: int | None = None,
    trials_per_iter: int | None = None,
    builder_timeout_s: float = 180.0,
    runner_timeout_s: float = 60.0,
    label: str = "tune",
    on_batch=None,
    with_baselines: bool = True,
    remeasure_top: int = 2,
    check_in_model: bool = True,
    rule_space: bool = False,
    quantize: str = "none",
    max_tasks: int | None = None,
) -> TuneResult:
    """Tunes the kernels of one model into a MetaSchedule database; returns what it did.

    ``trials`` is the number of new measurements this run may make (default 1000 when
    neither budget is given); ``time_budget`` is wall time (seconds or '30m'). Records
    already in the database are reused: they seed the search and train the cost model
    before the first batch, and MetaSchedule does not re-measure a schedule it finds there.
    Before searching, each kernel's default schedule is measured and recorded (``baseline``);
    after, the ``remeasure_top`` leading records of each kernel and its baseline are timed
    again side by side and their times replaced by the medians (``verify``), so compile
    applies a record only where it beats the default in a fair comparison. Finally, kernels
    whose best record is a search record are profiled inside the model against the default
    schedule (``in_model``); a record that loses there is vetoed for compile.

    ``quantize`` tunes the kernels of that precision's build (``fp16``: what ``compile
    --quantize fp16`` runs); ``max_tasks`` keeps only the costliest kernels (a short GPU
    session). On CUDA the baselines are dlight's schedules; the in-model check is CPU-only
    (its per-kernel profile cannot see inside a captured CUDA graph), so a GPU database is
    checked end to end instead (``benchmarks/bench_gpu.py --compare-untuned``).
    """
    start_wall = time.monotonic()
    budget = Budget.from_args(trials, time_budget)
    spec = _resolve_target(target)
    tune_elsewhere = _tuner_of(spec)
    if tune_elsewhere is not None:
        return tune_elsewhere(model, spec, opt_level, input_shapes, trials=budget.trials, time_budget=time_budget,
                         tuning_db=tuning_db, seed=seed, rpc_tracker=rpc_tracker, progress=progress)
    from . import prepare as prep_step
    from . import steps
    from .measure import make_builder, make_runner
    from .search import run_search

    line = ProgressLine(label, enabled=progress)
    work_dir = prep_step.open_work_dir(tuning_db, spec)
    # one tuner per database at a time: a second waits instead of interleaving appends
    with dbmod.exclusive(work_dir, notify=lambda text: line.update(text, force=True)):
        prep = prep_step.prepare(model, spec, work_dir, line, opt_level=opt_level, input_shapes=input_shapes,
                                 quantize=quantize, min_share=min_share, max_tasks=max_tasks,
                                 use_shipped_schedules=use_shipped_schedules, start_wall=start_wall)
        if not prep.keep or budget.trials == 0:
            return make_result(prep, "nothing-to-tune" if not prep.keep else "trials",
                               tasks=[task_json(t, dbmod.best_seconds(prep.database, t.mod), 0) for t in prep.keep])
        contexts, weights = prep_step.tune_contexts(prep, seed, rule_space)
        if not prep.keep:
            return make_result(prep, "nothing-to-tune")

        cores = prep_step.cores_of(spec)
        builder = make_builder(cores, builder_timeout_s)
        runner = make_runner(spec, rpc_tracker, rpc_key, runner_timeout_s)
        baselines = []
        if with_baselines:
            try:
                baselines = steps.measure_baselines(prep, builder, runner)
            except steps.BaselinesInterrupted:
                line.done(f"interrupted while measuring the default schedules; the records so far are in {work_dir}")
                return make_result(prep, "interrupted")

        per_batch = budget.trials_per_batch(len(contexts), trials_per_iter)
        # Best known time per task, seeded from the database (warm start; baselines included).
        plan = TaskScheduler(weights, [dbmod.best_seconds(prep.database, t.mod) for t in prep.keep], budget,
                             per_batch, Budget.patience(per_batch, early_stop_trials))
        reason = run_search(prep, plan, contexts, weights, builder, runner, seed=seed, cores=cores, on_batch=on_batch)

        database, best = prep.database, plan.best
        est_start, est_end = plan.start_estimate_ms(), plan.estimate_ms(plan.best)
        if reason != "interrupted" and remeasure_top > 0 and plan.trials > 0:
            try:
                verified = steps.verify(prep, builder, runner, baselines, plan.start_best, remeasure_top)
            except KeyboardInterrupt:
                reason, verified = "interrupted", None
            if verified is not None:
                database, best, baselines = verified.database, verified.best, verified.baselines
                est_start, est_end = plan.estimate_ms(verified.start_best), plan.estimate_ms(best)
        in_model = []
        if reason != "interrupted" and check_in_model and plan.trials > 0 and steps.in_model_check_applies(spec):
            try:
                in_model = steps.check_in_model(prep, database)
            except KeyboardInterrupt:
                reason = "interrupted"

        n_trials = plan.trials
        if reason == "interrupted":
            # A Ctrl-C that lands while MetaSchedule's own callbacks run (the database
            # already holds the batch, the cost-model update is still going) skips our
            # counting callback: count what was recorded, not what was called back.
            recorded = (dbmod.count_records(work_dir) - prep.records_before
                        - sum(1 for b in baselines if b.status == "measured"))
            n_trials = max(n_trials, recorded)
        result = make_result(
            prep, reason, trials=n_trials, curve=plan.curve, baselines=baselines, in_model=in_model,
            estimated_ms_start=est_start, estimated_ms_end=est_end,
            tasks=[task_json(t, best[i], plan.task_trials[i], steps.default_seconds(baselines, t.name, database, t.mod))
                   for i, t in enumerate(prep.keep)],
        )
        new_records = result.records_after - result.records_before
        line.done(
            f"{reason}: {result.trials} trials in {fmt_duration(result.elapsed_s)}, {new_records} new records in {work_dir}"
            + (f"; estimated {est_start:.2f} -> {est_end:.2f} ms over tuned kernels" if est_end and est_start else "")
        )
        return result


def _resolve_target(target):
    from ..targets import TargetSpec, load_target

    return target if isinstance(target, TargetSpec) else load_target(target)


def _tuner_of(spec):
    """The backend's own tuner (npu-sim: tiles measured in simulated cycles), or None for MetaSchedule here."""
    from ..backends import for_target

    return for_target(spec).tune_elsewhere()
