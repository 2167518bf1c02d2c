"""Steps 2, 4 and 5 of a tuning run: baselines, verify, in-model check.

Each is a thin wrapper over its module (``baseline``, ``verify``, ``in_model``) that
decides whether the step applies to this run and target, sends native chatter to the
run's log and turns a Ctrl-C into the run's "interrupted" stop instead of a crash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..native_log import native_stderr_to_file
from . import database as dbmod


class BaselinesInterrupted(Exception):
    """Ctrl-C while the default schedules were measured (the records so far are kept)."""


def baselines_apply(spec) -> bool:
    """The target kinds whose default schedules can be measured as baselines (target-kind branch)."""
    from ..backends import for_target

    return for_target(spec).records_baselines


def measure_baselines(prep, builder, runner) -> list:
    """The default rule's schedule of each kernel, measured like any candidate and committed as a
    record: the database's best can then never lose to an untuned build. [] where not applicable."""
    if not baselines_apply(prep.spec):
        return []
    from .baseline import commit_baselines

    try:
        with native_stderr_to_file(prep.native_log):
            baselines = commit_baselines(list(prep.keep), prep.database, prep.tvm_target, builder, runner, progress=prep.say)
    except KeyboardInterrupt:
        raise BaselinesInterrupted from None
    measured = [b for b in baselines if b.status == "measured"]
    if measured:
        prep.say(f"{len(measured)} default schedule(s) measured and recorded as baselines")
    return baselines


@dataclass
class Verified:
    """Times after the side-by-side re-measurement (``verify.remeasure``)."""

    database: object  # reopened: the medians replaced the search times
    best: list  # best seconds per task
    start_best: list  # the default schedules' seconds, re-timed in the same window as ``best``
    baselines: list


def verify(prep, builder, runner, baselines, start_best, top_k: int) -> Verified | None:
    """One search measurement per candidate on a shared machine favours lucky ones: the leading
    ``top_k`` records of each kernel and its baseline are timed again side by side.

    None when nothing was re-measured; raises KeyboardInterrupt on Ctrl-C.
    """
    from .baseline import baseline_seconds
    from .verify import remeasure

    with native_stderr_to_file(prep.native_log):
        verified = remeasure(prep.work_dir, [t.mod for t in prep.keep], prep.tvm_target, builder, runner, top_k=top_k,
                             progress=prep.say)
    if not verified:
        return None
    database = dbmod.open_db(prep.work_dir)
    best = [dbmod.best_seconds(database, t.mod) for t in prep.keep]
    start = [baseline_seconds(database, t.mod) or start_best[i] for i, t in enumerate(prep.keep)]
    mods = {t.name: t.mod for t in prep.keep}
    baselines = [dataclasses.replace(b, seconds=baseline_seconds(database, mods[b.task]) or b.seconds)
                 if b.task in mods and b.seconds is not None else b for b in baselines]
    return Verified(database, best, start, baselines)


def in_model_check_applies(spec) -> bool:
    """The per-kernel in-model profile runs on CPU targets only: it cannot see inside a captured
    CUDA graph, so a GPU database is checked end to end instead (target-kind branch)."""
    from ..backends import for_target

    return for_target(spec).checks_in_model


def check_in_model(prep, database) -> list[dict]:
    """Kernels whose best record is a search record: do they also win inside the model? A loser is vetoed.

    Raises KeyboardInterrupt on Ctrl-C.
    """
    from . import in_model as in_model_mod
    from .baseline import best_is_search_record

    contenders = [t.name for t in prep.keep if best_is_search_record(database, t.mod)]
    if not contenders:
        return []
    rows = in_model_mod.check(prep.build, prep.work_dir, contenders, progress=prep.say)
    for row in rows:
        if row["vetoed"]:
            prep.say(f"{row['task'][:40]}: tuned {row['tuned_ms']:.3f} ms vs default {row['default_ms']:.3f} ms "
                     "in the model: record vetoed, the default schedule stays")
    return rows


def default_seconds(baselines, name, database, mod) -> float | None:
    """The default schedule's measured time for a task: from this run, else from its record."""
    from .baseline import baseline_seconds

    for b in baselines:
        if b.task == name and b.seconds is not None:
            return b.seconds
    return baseline_seconds(database, mod)
