"""The tuning run: tasks -> MetaSchedule (gradient scheduler, evolutionary search,
XGBoost cost model) -> records appended to a JSON database.

Control that MetaSchedule lacks is layered on through one measure callback that
runs after every measured batch: the live progress line, the trial and wall-time
budgets, per-task early stopping and the tuning curve. Stopping works by
terminating the scheduler's tasks, so the scheduler exits its loop normally and
every record measured so far is already on disk (JSONDatabase appends per record).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutoGLMError
from . import database as dbmod
from .progress import ProgressLine, fmt_duration


@dataclass
class TuneResult:
    database: str
    target: str
    trials: int  # measured in this run
    records_before: int
    records_after: int
    elapsed_s: float
    stop_reason: str  # "trials" | "time" | "converged" | "interrupted" | "nothing-to-tune"
    estimated_ms_start: float | None
    estimated_ms_end: float | None
    tasks: list[dict] = field(default_factory=list)
    skipped_tasks: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)  # {trials, elapsed_s, estimated_ms}
    baselines: list[dict] = field(default_factory=list)  # default-rule schedule per task: {task, rule, us, status}
    in_model: list[dict] = field(default_factory=list)  # per contending task: {task, default_ms, tuned_ms, vetoed}

    def to_json(self) -> dict:
        return dict(self.__dict__)


def parse_duration(text) -> float | None:
    """'30m', '1h30m', '90s', '45' (seconds) -> seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    import re

    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(a + b for a, b in parts) != s.replace(" ", ""):
        raise AutoGLMError(f"cannot read time budget {text!r}", hint="use e.g. 30m, 1h, 90s or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _rpc_runner(tracker: str, key: str, evaluator):
    from tvm.s_tir import meta_schedule as ms

    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AutoGLMError(f"--rpc-tracker must be HOST:PORT (got {tracker!r})")
    if not key:
        raise AutoGLMError("--rpc-tracker needs --rpc-key (the key the RPC servers registered with)")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key, session_timeout_sec=60)
    try:
        from tvm import rpc

        summary = rpc.connect_tracker(host, int(port)).summary()
    except Exception as err:  # noqa: BLE001
        raise AutoGLMError(f"cannot reach the RPC tracker at {tracker}: {err}") from None
    queue = summary.get("queue_info", {}).get(key, {})
    workers = int(queue.get("free", 0)) + int(queue.get("pending", 0))
    if workers < 1:
        keys = ", ".join(sorted(summary.get("queue_info", {}))) or "none"
        raise AutoGLMError(f"no RPC server is registered with the tracker at {tracker} under key {key!r} (keys: {keys})")
    return ms.runner.RPCRunner(config, evaluator_config=evaluator, max_workers=workers), workers


def _drop_ms_console_handlers() -> None:
    """MetaSchedule's loggers were just configured; keep their files, drop the console."""
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("tvm.s_tir.meta_schedule")]:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)


def _quiet_ms_console() -> None:
    # create_loggers gives the console handler the global logger's level: WARNING keeps
    # the per-task INFO/DEBUG chatter in the log files only.
    lg = logging.getLogger("tvm.s_tir.meta_schedule")
    # It also re-lists the handlers already there by name and fails on an unnamed one
    # (a second tune() in one process); start each run from a clean logger.
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
    if lg.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
        lg.setLevel(logging.WARNING)


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
    with contextlib.ExitStack() as held_locks:
        from tvm.s_tir import meta_schedule as ms
        from tvm.ir.utils import derived_object

        from ..targets import TargetSpec, load_target
        from . import tasks as taskmod
        from .apply import shipped_databases

        start_wall = time.monotonic()
        budget_s = parse_duration(time_budget)
        if trials is None and budget_s is None:
            trials = 1000
        if trials is not None and trials < 0:
            raise AutoGLMError(f"--trials must be >= 0 (got {trials})")
        spec = target if isinstance(target, TargetSpec) else load_target(target)
        from ..backends import for_target

        backend = for_target(spec)
        tune_elsewhere = backend.tune_elsewhere()  # npu-sim: tiles measured in simulated cycles
        if tune_elsewhere is not None:
            return tune_elsewhere(model, spec, opt_level, input_shapes, trials=trials, time_budget=time_budget,
                                  tuning_db=tuning_db, seed=seed, rpc_tracker=rpc_tracker, progress=progress)
        tvm_target = spec.tvm_target()
        cores = int(spec.tvm_config.get("num-cores", 0) or 0) if hasattr(spec, "tvm_config") else 0
        cores = cores or os.cpu_count() or 1
        line = ProgressLine(label, enabled=progress)

        work_dir = Path(tuning_db) if tuning_db else dbmod.default_dir(spec.name)
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / "logs").mkdir(exist_ok=True)
        except OSError as err:
            raise AutoGLMError(f"cannot create tuning database folder {work_dir}: {err.strerror}") from None
        # one tuner per database at a time: a second waits instead of interleaving appends
        held_locks.enter_context(dbmod.exclusive(work_dir, notify=lambda text: line.update(text, force=True)))

        line.update("building the fused module ...", force=True)
        build = _build_for_tuning(model, spec, opt_level, input_shapes, quantize)
        keep, skip = taskmod.extract(build.mod, tvm_target, min_share=min_share)
        if max_tasks is not None:
            keep, rest = taskmod.top_tasks(keep, max_tasks)
            skip = sorted(skip + rest, key=lambda t: -t.share)

        database = dbmod.open_db(work_dir)
        records_before = dbmod.count_records(work_dir)
        if use_shipped_schedules and opt_level >= 3:
            # Start from the shipped schedules: their best records seed the search.
            for shipped in shipped_databases(spec.name):
                try:
                    src = dbmod.open_db(shipped, create=False)
                    dbmod.copy_best(src, database, [t.mod for t in keep], k=1)
                except Exception:  # noqa: BLE001 - a bad shipped DB must not stop tuning
                    continue
            records_before = dbmod.count_records(work_dir)

        skipped = [{"name": t.name, "calls": t.weight, "flops": t.flops, "share": t.share} for t in skip]
        if not keep or trials == 0:
            return TuneResult(str(work_dir), spec.name, 0, records_before, records_before, time.monotonic() - start_wall,
                              "nothing-to-tune" if not keep else "trials", None, None,
                              [_task_json(t, dbmod.best_seconds(database, t.mod), 0) for t in keep], skipped, [])

        _quiet_ms_console()
        from .fastimport import preload_tensor_intrin

        line.update("loading MetaSchedule intrinsics ...", force=True)
        preload_tensor_intrin()
        from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

        # One search thread: MetaSchedule hands population samples to threads dynamically, each
        # with its own random state, so with more threads the same seed gives different choices.
        # Building and measuring (the costly part) still use every core.
        # rule_space: the search also walks our Matmul rule's decisions (tuning/rule_space.py);
        # off by default: on bert-base FFN kernels it found nothing faster than the default rule.
        from .rule_space import union_space

        contexts, weights = extracted_tasks_to_tune_contexts(
            [t.extracted for t in keep], work_dir=str(work_dir), seed=seed, num_threads=1,
            space=union_space(tvm_target) if rule_space else "post-order-apply",
        )
        _drop_ms_console_handlers()
        # Some fused kernels (e.g. GEMM + reshape/transpose epilogues) make MetaSchedule's
        # default rules fail while building the design space, which aborts the whole
        # scheduler. Find them first and leave them to the default schedules.
        good = []
        for i, ctx in enumerate(contexts):
            try:
                with _logs_to_file(work_dir / "logs" / "tvm_native.log"):
                    spaces = ctx.generate_design_space()
                if spaces:
                    good.append(i)
                    continue
                why = "no design space"
            except Exception as err:  # noqa: BLE001 - any failure here means "not tunable by MetaSchedule"
                why = type(err).__name__
            skipped.append({"name": keep[i].name, "calls": keep[i].weight, "flops": keep[i].flops, "share": keep[i].share,
                            "reason": f"MetaSchedule cannot build a search space ({why})"})
        if len(good) < len(contexts):
            line.update(f"{len(contexts) - len(good)} kernel(s) not tunable by MetaSchedule; they keep default schedules", force=True)
        keep = [keep[i] for i in good]
        contexts = [contexts[i] for i in good]
        weights = [weights[i] for i in good]
        if not keep:
            return TuneResult(str(work_dir), spec.name, 0, records_before, records_before, time.monotonic() - start_wall,
                              "nothing-to-tune", None, None, [], skipped, [])
        n = len(contexts)
        total = trials if trials is not None else 1 << 30
        # Small batches early on: every kernel gets measured (and the estimate exists) soon,
        # and the gradient scheduler gets to move trials sooner. ~4 s per trial when sizing
        # from a time budget.
        expected = trials if trials is not None else budget_s / 4.0
        per_iter = trials_per_iter or int(min(32, max(8, expected // max(3 * n, 1))))
        patience = early_stop_trials or max(4 * per_iter, 64)

        builder = ms.builder.LocalBuilder(max_workers=cores, timeout_sec=builder_timeout_s, initializer=builder_worker_init)
        # Measure kernels the way the model runs them. Threads: the runner's worker process must
        # use the deployment's thread count (TVM's own default is half the CPUs). Caches: in a
        # model a kernel's weights come cold from DRAM (bert-base is 440 MB), timed back to back
        # they sit in L3; flushing every argument but the first (the freshly produced activation)
        # before each of 5 single runs is MetaSchedule's CPU setting for that.
        from ..runtime.session import default_thread_count

        default_thread_count()
        # A GPU kernel of a batch-1 model runs for microseconds: one launch per repeat would time
        # the launch, so each repeat averages 20 back-to-back runs (no cache flush on the GPU).
        evaluator = ms.runner.EvaluatorConfig(number=backend.measure_number, repeat=5, min_repeat_ms=0,
                                              enable_cpu_cache_flush=backend.flush_cpu_cache)
        if rpc_tracker:
            runner, _ = _rpc_runner(rpc_tracker, rpc_key, evaluator)
        else:
            runner = ms.runner.LocalRunner(timeout_sec=runner_timeout_s, evaluator_config=evaluator, initializer=ignore_sigint)
        baselines = []
        if with_baselines and backend.records_baselines:
            # The default rule's schedule of each kernel, measured like any candidate and
            # committed as a record: the database's best can then never lose to an untuned build.
            from .baseline import commit_baselines

            try:
                with _logs_to_file(work_dir / "logs" / "tvm_native.log"):
                    baselines = commit_baselines([t for t in keep], database, tvm_target, builder, runner,
                                                 progress=lambda text: line.update(text, force=True))
            except KeyboardInterrupt:
                line.done(f"interrupted while measuring the default schedules; the records so far are in {work_dir}")
                return TuneResult(str(work_dir), spec.name, 0, records_before, dbmod.count_records(work_dir),
                                  time.monotonic() - start_wall, "interrupted", None, None, [], skipped, [])
            measured = [b for b in baselines if b.status == "measured"]
            if measured:
                line.update(f"{len(measured)} default schedule(s) measured and recorded as baselines", force=True)
        # Best known time per task, seeded from the database (warm start).
        best = [dbmod.best_seconds(database, t.mod) for t in keep]
        start_best = list(best)
        cost_model = ms.cost_model.XGBModel(num_tuning_cores=cores, tree_method="auto")
        warm = _warm_start(cost_model, database, contexts, keep)

        def estimate(values):
            if any(v is None for v in values):
                return None
            return sum(w * v for w, v in zip(weights, values)) * 1e3

        state = {"trials": 0, "reason": None, "since_improved": [0] * n, "task_trials": [0] * n, "curve": [], "history": [[] for _ in range(n)]}
        est0 = estimate(start_best)

        @derived_object
        class _Control(ms.measure_callback.PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                batch = len(runner_results)
                state["trials"] += batch
                state["task_trials"][task_id] += batch
                improved = False
                for res in runner_results:
                    if res.error_msg is None and res.run_secs:
                        secs = [float(s) for s in res.run_secs]
                        t = sum(secs) / len(secs)
                        if best[task_id] is None or t < best[task_id] * 0.99:
                            improved = improved or best[task_id] is not None
                            best[task_id] = t if best[task_id] is None else min(best[task_id], t)
                if start_best[task_id] is None:
                    # No record before this run: the first estimate is this first batch's best.
                    start_best[task_id] = best[task_id]
                state["since_improved"][task_id] = 0 if improved else state["since_improved"][task_id] + batch
                state["history"][task_id].append(best[task_id])
                elapsed = time.monotonic() - start_wall
                now = estimate(best)
                first = estimate(start_best) if est0 is None else est0
                state["curve"].append({"trials": state["trials"], "elapsed_s": round(elapsed, 2), "estimated_ms": now})
                reason = None
                if trials is not None and state["trials"] >= trials:
                    reason = "trials"
                elif budget_s is not None and elapsed >= budget_s:
                    reason = "time"
                if reason:
                    state["reason"] = reason
                elif state["since_improved"][task_id] >= patience and not task_scheduler.tasks_[task_id].is_terminated:
                    task_scheduler.terminate_task(task_id)
                eta = None
                if state["trials"]:
                    rate = elapsed / state["trials"]
                    if trials is not None:
                        eta = (trials - state["trials"]) * rate
                    if budget_s is not None:
                        eta = min(eta if eta is not None else math.inf, budget_s - elapsed)
                done_txt = f"{state['trials']}/{trials}" if trials is not None else f"{state['trials']}"
                est_txt = f"est {now:.2f} ms (start {first:.2f} ms)" if now is not None and first is not None else f"est ? ({sum(b is not None for b in best)}/{n} kernels measured)"
                line.update(f"{done_txt} trials | {fmt_duration(elapsed)} elapsed | ETA {fmt_duration(eta)} | {est_txt} | {keep[task_id].name[:40]}")
                if on_batch is not None:
                    on_batch(dict(state["curve"][-1]))
                # A budget stop is seen by the scheduler's next_task_id, which ends the loop
                # normally (raising here would drop any batch not yet joined).

        callbacks = ms.measure_callback.MeasureCallback.create("default") + [_Control()]
        scheduler = _make_scheduler(weights, best, state, per_iter)

        line.update(f"{n} kernels to tune ({len(skip)} negligible skipped), {dbmod.count_records(work_dir)} records in {work_dir}, cost model warmed on {warm}", force=True)
        import signal

        def _on_sigint(signum, frame):
            # The first Ctrl-C only asks the scheduler to stop: its next_task_id returns -1
            # after joining the batch in flight, so MetaSchedule's loop ends normally. Raising
            # here instead unwound through whatever native frame the main thread was in (the
            # handler runs in the next Python callback MetaSchedule makes, e.g. a cost-model
            # update or our measure callback): about one run in three then died with SIGSEGV
            # (TVM's own handler) instead of exiting 130. A second Ctrl-C aborts at once.
            if state["reason"] == "interrupted":
                raise KeyboardInterrupt
            state["reason"] = "interrupted"
            line.update("interrupted: stopping after the batch being measured (Ctrl-C again to abort now)", force=True)

        previous = signal.signal(signal.SIGINT, _on_sigint) if _main_thread() else None
        # XGBModel predicts with numpy's global generator until it has enough samples: seed it
        # for this run (and give the caller's state back afterwards) so the seed decides the choices.
        import numpy as np

        rng_state = np.random.get_state()
        np.random.seed(seed)
        try:
            with _logs_to_file(work_dir / "logs" / "tvm_native.log"):
                ms.tune.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=str(work_dir),
                    max_trials_global=1 << 30,  # budgets are enforced by _Control
                    max_trials_per_task=None,
                    num_trials_per_iter=per_iter,
                    builder=builder,
                    runner=runner,
                    database=database,
                    cost_model=cost_model,
                    measure_callbacks=callbacks,
                    task_scheduler=scheduler,
                )
        except KeyboardInterrupt:
            state["reason"] = "interrupted"
        except Exception:
            # Our stop (and a SIGINT) inside the native loop surface as FFI errors.
            if state["reason"] is None:
                raise
        finally:
            np.random.set_state(rng_state)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        reason = state["reason"] or ("converged" if trials is None or state["trials"] < trials else "trials")
        verified = {}
        if reason != "interrupted" and remeasure_top > 0 and state["trials"] > 0:
            # One search measurement per candidate on a shared machine favours lucky ones:
            # the leading records and the baseline are timed again side by side.
            from .verify import remeasure

            try:
                with _logs_to_file(work_dir / "logs" / "tvm_native.log"):
                    verified = remeasure(work_dir, [t.mod for t in keep], tvm_target, builder, runner, top_k=remeasure_top,
                                         progress=lambda text: line.update(text, force=True))
            except KeyboardInterrupt:
                reason = "interrupted"
            if verified:
                database = dbmod.open_db(work_dir)
                best = [dbmod.best_seconds(database, t.mod) for t in keep]
                from .baseline import baseline_seconds

                # "start" = the default schedules, re-timed in the same window as the best records
                start_best = [baseline_seconds(database, t.mod) or start_best[i] for i, t in enumerate(keep)]
                est0 = None
                mods = {t.name: t.mod for t in keep}
                baselines = [dataclasses.replace(b, seconds=baseline_seconds(database, mods[b.task]) or b.seconds)
                             if b.task in mods and b.seconds is not None else b for b in baselines]
        in_model = []
        if reason != "interrupted" and check_in_model and state["trials"] > 0 and backend.checks_in_model:
            # Kernels whose best record is a search record: do they also win inside the model?
            from . import in_model as in_model_mod
            from .baseline import best_is_search_record

            contenders = [t.name for t in keep if best_is_search_record(database, t.mod)]
            if contenders:
                try:
                    in_model = in_model_mod.check(build, work_dir, contenders, progress=lambda text: line.update(text, force=True))
                except KeyboardInterrupt:
                    reason = "interrupted"
                for row in in_model:
                    if row["vetoed"]:
                        line.update(f"{row['task'][:40]}: tuned {row['tuned_ms']:.3f} ms vs default {row['default_ms']:.3f} ms "
                                    "in the model: record vetoed, the default schedule stays", force=True)
        elapsed = time.monotonic() - start_wall
        records_after = dbmod.count_records(work_dir)
        if reason == "interrupted":
            # A Ctrl-C that lands while MetaSchedule's own callbacks run (the database
            # already holds the batch, the cost-model update is still going) skips our
            # counting callback: count what was recorded, not what was called back.
            recorded = records_after - records_before - sum(1 for b in baselines if b.status == "measured")
            state["trials"] = max(state["trials"], recorded)
        result = TuneResult(
            database=str(work_dir),
            target=spec.name,
            trials=state["trials"],
            records_before=records_before,
            records_after=records_after,
            elapsed_s=round(elapsed, 2),
            stop_reason=reason,
            estimated_ms_start=estimate(start_best) if est0 is None else est0,
            estimated_ms_end=estimate(best),
            tasks=[_task_json(t, best[i], state["task_trials"][i], _baseline_of(baselines, t.name, database, t.mod))
                   for i, t in enumerate(keep)],
            skipped_tasks=skipped,
            curve=state["curve"],
            in_model=in_model,
            baselines=[{"task": b.task, "rule": b.rule, "us": None if b.seconds is None else round(b.seconds * 1e6, 3), "status": b.status}
                       for b in baselines],
        )
        end = result.estimated_ms_end
        line.done(
            f"{reason}: {result.trials} trials in {fmt_duration(elapsed)}, {records_after - records_before} new records in {work_dir}"
            + (f"; estimated {result.estimated_ms_start:.2f} -> {end:.2f} ms over tuned kernels" if end and result.estimated_ms_start else "")
        )
        return result


def _build_for_tuning(model, spec, opt_level, input_shapes, quantize: str):
    """The fused module whose kernels compile would schedule, at the requested precision."""
    from ..pipeline import compile_model

    return compile_model(model, spec, opt_level, input_shapes, quantize=quantize or "none", until="relax").build


def _make_scheduler(weights, best, state, per_iter: int, alpha: float = 0.5, window: int = 3):
    """A gradient task scheduler that commits every batch as soon as it is measured.

    MetaSchedule's GradientBased scheduler joins (measures, records, calls back)
    nothing until it has sent one batch of *every* task, so on a 20-kernel model the
    first records land after hundreds of trials: a kill before that loses them all
    and the budgets cannot act. This one joins the previous batch before choosing
    the next (measurement then also never overlaps a build, which matters on a
    2-core host), and picks the next task by the same idea: expected gain of
    end-to-end latency = calls x (recent improvement rate, blended with the optimism
    of a task tried little), round-robin until every task has one batch.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class _Scheduler(ms.task_scheduler.PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.last = None
            self.rounds = 0

        def next_task_id(self) -> int:
            outer = self._outer()
            tasks = outer.tasks_
            if self.last is not None and not tasks[self.last].is_terminated:
                self.join_running_task(self.last)
            self.last = None
            if state["reason"]:
                return -1
            alive = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not alive:
                return -1
            if self.rounds < len(tasks):
                while self.rounds < len(tasks) and tasks[self.rounds].is_terminated:
                    self.rounds += 1
                if self.rounds < len(tasks):
                    self.last = self.rounds
                    self.rounds += 1
                    return self.last

            def score(i):
                hist = state["history"][i]
                now = best[i] if best[i] is not None else float("inf")
                if not hist or now == float("inf"):
                    return float("inf")
                before = hist[-1 - window] if len(hist) > window else hist[0]
                before = before if before is not None else now
                backward = max(before - now, 0.0) / max(min(len(hist), window), 1)
                tried = state["task_trials"][i] / max(per_iter, 1)
                forward = now / (1.0 + tried)
                return weights[i] * (alpha * backward + (1 - alpha) * forward)

            self.last = max(alive, key=lambda i: (score(i), -i))
            return self.last

    return _Scheduler()


def ignore_sigint() -> None:
    """Builder/runner worker initializer: Ctrl-C reaches the whole process group, and a worker
    killed mid-batch turns the batch being measured into errors; the main process decides."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def builder_worker_init() -> None:
    from .fastimport import preload_tensor_intrin

    ignore_sigint()
    preload_tensor_intrin()


class _StopTuning(Exception):
    pass


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _task_json(t, best_s, n_trials, default_s=None) -> dict:
    return {"name": t.name, "calls": t.weight, "flops": t.flops, "share": round(t.share, 4), "trials": n_trials,
            "best_us": None if best_s is None else round(best_s * 1e6, 3),
            "default_us": None if default_s is None else round(default_s * 1e6, 3)}


def _baseline_of(baselines, name, database, mod) -> float | None:
    """The default schedule's measured time for a task: from this run, else from its record."""
    from .baseline import baseline_seconds

    for b in baselines:
        if b.task == name and b.seconds is not None:
            return b.seconds
    return baseline_seconds(database, mod)


def _warm_start(cost_model, database, contexts, keep) -> int:
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


@contextlib.contextmanager
def _logs_to_file(path: Path):
    """Sends native (C++) stderr chatter of the tuning loop to a log file.

    The progress line is written through Python's sys.stderr, which we point at a
    dup of the real terminal first, so it still shows.
    """
    import sys

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    log = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    old_stderr = sys.stderr
    os.dup2(log, fd)
    sys.stderr = _TTYProxy(real, old_stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = old_stderr
        os.dup2(saved, fd)
        os.close(saved)
        os.close(log)
        real.close()


class _TTYProxy:
    def __init__(self, real, original):
        self._real = real
        self._original = original

    def write(self, s):
        return self._real.write(s)

    def flush(self):
        self._real.flush()

    def isatty(self):
        return self._original.isatty()

    def fileno(self):
        return self._real.fileno()
