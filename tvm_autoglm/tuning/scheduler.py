"""Which kernel to measure next, and when to stop: the tuning run's decisions, without TVM.

MetaSchedule's GradientBased scheduler joins (measures, records, calls back) nothing
until it has sent one batch of *every* task, so on a 20-kernel model the first records
land after hundreds of trials: a kill before that loses them all and the budgets cannot
act. Our run commits every batch as soon as it is measured and picks the next task by
the same idea as GradientBased: expected gain of end-to-end latency = calls x (recent
improvement rate, blended with the optimism of a task tried little), round-robin until
every task has one batch.

This module holds that logic as plain Python over numbers (``TaskScheduler``), so it is
unit-tested with fake measurements; ``tuning/search.py`` adapts it to MetaSchedule's
scheduler and measure-callback interfaces. Stop rules: the trial budget, the wall-time
budget, an outside request (Ctrl-C), and per-task early stopping after ``patience``
trials without a 1 % improvement.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import AutoGLMError

#: Trials of a run that gives neither budget.
DEFAULT_TRIALS = 1000
#: Wall seconds per measured trial assumed when sizing batches from a time budget alone.
SECONDS_PER_TRIAL_GUESS = 4.0
#: A new time counts as an improvement only below this fraction of the task's best.
IMPROVEMENT = 0.99


def parse_duration(text) -> float | None:
    """'30m', '1h30m', '90s', '45' (seconds) -> seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(a + b for a, b in parts) != s.replace(" ", ""):
        raise AutoGLMError(f"cannot read time budget {text!r}", hint="use e.g. 30m, 1h, 90s or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass(frozen=True)
class Budget:
    """What one run may spend: ``trials`` new measurements and/or ``seconds`` of wall time (None = unbounded)."""

    trials: int | None
    seconds: float | None

    @classmethod
    def from_args(cls, trials: int | None, time_budget) -> "Budget":
        """The CLI's --trials/--time-budget: 1000 trials when neither is given; a bad value is a user error."""
        seconds = parse_duration(time_budget)
        if trials is None and seconds is None:
            trials = DEFAULT_TRIALS
        if trials is not None and trials < 0:
            raise AutoGLMError(f"--trials must be >= 0 (got {trials})")
        return cls(trials, seconds)

    def trials_per_batch(self, n_tasks: int, override: int | None = None) -> int:
        """Small batches early on: every kernel gets measured (and the estimate exists) soon, and the
        scheduler gets to move trials sooner. Between 8 and 32, about a third of a share per task."""
        if override:
            return override
        expected = self.trials if self.trials is not None else self.seconds / SECONDS_PER_TRIAL_GUESS
        return int(min(32, max(8, expected // max(3 * n_tasks, 1))))

    @staticmethod
    def patience(per_batch: int, override: int | None = None) -> int:
        """Trials without improvement after which a task stops (at least 4 batches, at least 64)."""
        return override or max(4 * per_batch, 64)


@dataclass(frozen=True)
class BatchOutcome:
    """What the run should do after one measured batch."""

    stop: str | None  # "trials" | "time": the whole run stops
    retire_task: bool  # this task stopped improving: terminate it


@dataclass
class TaskScheduler:
    """Bookkeeping and decisions of one tuning run over ``len(weights)`` tasks.

    ``weights`` are the calls per inference of each task; ``best`` the best known seconds of
    each (from the database, None when unmeasured). Times are mean run seconds of a candidate.
    """

    weights: Sequence[float]
    best: list
    budget: Budget
    per_batch: int
    patience: int
    alpha: float = 0.5  # weight of the measured improvement rate against the optimism term
    window: int = 3  # batches over which the improvement rate is measured
    trials: int = 0
    stop_reason: str | None = None
    start_best: list = field(init=False)
    task_trials: list = field(init=False)
    since_improved: list = field(init=False)
    history: list = field(init=False)
    curve: list = field(init=False)
    _round_robin: int = field(init=False, default=0)

    def __post_init__(self):
        n = len(self.weights)
        if len(self.best) != n:
            raise ValueError(f"TaskScheduler: {n} weights but {len(self.best)} best times")
        self.best = list(self.best)
        self.start_best = list(self.best)
        self.task_trials = [0] * n
        self.since_improved = [0] * n
        self.history = [[] for _ in range(n)]
        self.curve = []
        self.initial_estimate_ms = self.estimate_ms(self.start_best)

    # ------------------------------------------------------------ estimates

    def estimate_ms(self, values) -> float | None:
        """Estimated milliseconds of the tuned kernels per inference (None while one is unmeasured)."""
        if any(v is None for v in values):
            return None
        return sum(w * v for w, v in zip(self.weights, values)) * 1e3

    def start_estimate_ms(self) -> float | None:
        """The estimate before this run's search: from the database, else from each task's first batch."""
        return self.initial_estimate_ms if self.initial_estimate_ms is not None else self.estimate_ms(self.start_best)

    def eta_s(self, elapsed_s: float) -> float | None:
        if not self.trials:
            return None
        rate = elapsed_s / self.trials
        eta = None
        if self.budget.trials is not None:
            eta = (self.budget.trials - self.trials) * rate
        if self.budget.seconds is not None:
            eta = min(eta if eta is not None else math.inf, self.budget.seconds - elapsed_s)
        return eta

    # ------------------------------------------------------------ measurements and stop rules

    def record_batch(self, task_id: int, run_secs: Sequence[Sequence[float] | None], elapsed_s: float) -> BatchOutcome:
        """One measured batch of ``task_id``: one entry per candidate, its repeat times or None (failed)."""
        batch = len(run_secs)
        self.trials += batch
        self.task_trials[task_id] += batch
        best = self.best[task_id]
        improved = False
        for secs in run_secs:
            if not secs:
                continue
            t = sum(float(s) for s in secs) / len(secs)
            if best is None or t < best * IMPROVEMENT:
                improved = improved or best is not None
                best = t if best is None else min(best, t)
        self.best[task_id] = best
        if self.start_best[task_id] is None:
            # No record before this run: the first estimate is this first batch's best.
            self.start_best[task_id] = best
        self.since_improved[task_id] = 0 if improved else self.since_improved[task_id] + batch
        self.history[task_id].append(best)
        self.curve.append({"trials": self.trials, "elapsed_s": round(elapsed_s, 2), "estimated_ms": self.estimate_ms(self.best)})
        stop = None
        if self.budget.trials is not None and self.trials >= self.budget.trials:
            stop = "trials"
        elif self.budget.seconds is not None and elapsed_s >= self.budget.seconds:
            stop = "time"
        if stop:
            self.request_stop(stop)
        return BatchOutcome(stop, not stop and self.since_improved[task_id] >= self.patience)

    def request_stop(self, reason: str) -> None:
        """Ends the run at the next task choice. The first reason given is the one reported, except
        that "interrupted" (Ctrl-C) always wins: the CLI then exits 130 and a second Ctrl-C aborts."""
        if self.stop_reason is None or reason == "interrupted":
            self.stop_reason = reason

    def final_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "converged" if self.budget.trials is None or self.trials < self.budget.trials else "trials"

    # ------------------------------------------------------------ task choice

    def score(self, i: int) -> float:
        """Expected end-to-end gain of one more batch of task ``i`` (inf: not measured yet)."""
        hist = self.history[i]
        now = self.best[i] if self.best[i] is not None else math.inf
        if not hist or now == math.inf:
            return math.inf
        before = hist[-1 - self.window] if len(hist) > self.window else hist[0]
        before = before if before is not None else now
        backward = max(before - now, 0.0) / max(min(len(hist), self.window), 1)
        tried = self.task_trials[i] / max(self.per_batch, 1)
        forward = now / (1.0 + tried)
        return self.weights[i] * (self.alpha * backward + (1 - self.alpha) * forward)

    def next_task(self, terminated: Sequence[bool]) -> int:
        """The task to measure next (-1: stop): each live task once in order, then the best score (ties: lowest id)."""
        if self.stop_reason:
            return -1
        alive = [i for i, done in enumerate(terminated) if not done]
        if not alive:
            return -1
        n = len(terminated)
        while self._round_robin < n and terminated[self._round_robin]:
            self._round_robin += 1
        if self._round_robin < n:
            self._round_robin += 1
            return self._round_robin - 1
        return max(alive, key=lambda i: (self.score(i), -i))
