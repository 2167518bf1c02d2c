"""What a tuning run reports (``TuneResult``), built in one place for every way a run ends.

A run ends early (nothing to tune, a zero budget, every kernel untunable, Ctrl-C while
the default schedules are measured) or after the search; ``make_result`` fills the same
fields the same way for all of them, so the CLI summary and ``--json`` never differ by path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import database as dbmod


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


def task_json(t, best_s, n_trials, default_s=None) -> dict:
    """One task's row: identity, cost share, trials spent, best and default-schedule times in µs."""
    return {"name": t.name, "calls": t.weight, "flops": t.flops, "share": round(t.share, 4), "trials": n_trials,
            "best_us": None if best_s is None else round(best_s * 1e6, 3),
            "default_us": None if default_s is None else round(default_s * 1e6, 3)}


def skipped_json(t, reason: str | None = None) -> dict:
    row = {"name": t.name, "calls": t.weight, "flops": t.flops, "share": t.share}
    if reason is not None:
        row["reason"] = reason
    return row


def baseline_json(b) -> dict:
    return {"task": b.task, "rule": b.rule, "us": None if b.seconds is None else round(b.seconds * 1e6, 3), "status": b.status}


def make_result(prep, stop_reason: str, *, trials: int = 0, tasks=(), curve=(), baselines=(), in_model=(),
                estimated_ms_start=None, estimated_ms_end=None) -> TuneResult:
    """The TuneResult of a run prepared as ``prep`` (``prepare.Prepared``), ending now."""
    return TuneResult(
        database=str(prep.work_dir),
        target=prep.spec.name,
        trials=trials,
        records_before=prep.records_before,
        records_after=dbmod.count_records(prep.work_dir),
        elapsed_s=round(time.monotonic() - prep.start_wall, 2),
        stop_reason=stop_reason,
        estimated_ms_start=estimated_ms_start,
        estimated_ms_end=estimated_ms_end,
        tasks=list(tasks),
        skipped_tasks=list(prep.skipped),
        curve=list(curve),
        baselines=[baseline_json(b) for b in baselines],
        in_model=list(in_model),
    )
