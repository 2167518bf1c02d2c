"""Clean-run timing on a shared, noisy machine.

Two defences, because a median over a window in which another job grabbed a
core measures that job, not ours:

* before measuring, wait (bounded) until the machine looks idle (CPU percent
  and load average);
* around every timed run, read the run-queue wait of all of this process's
  threads (``/proc/self/task/*/schedstat``, 2nd field: nanoseconds spent
  runnable but not running) and drop runs whose threads waited for a CPU for
  more than a threshold. The drops are counted and reported, never hidden.

Candidates are measured interleaved (round-robin, order rotated each round)
so slow drifts of the machine hit all of them alike.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..runtime.session import summarize

TASK_DIR = Path("/proc/self/task")


def read_run_queue_wait() -> dict[int, int] | None:
    """{thread id: ns waited on a run queue}; None where schedstat is unavailable (not Linux, no CONFIG_SCHEDSTATS)."""
    waits: dict[int, int] = {}
    try:
        tasks = os.listdir(TASK_DIR)
    except OSError:
        return None
    for tid in tasks:
        try:
            fields = (TASK_DIR / tid / "schedstat").read_text().split()
            waits[int(tid)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread exited between listdir and read
    return waits or None


def wait_delta_ns(before: dict[int, int] | None, after: dict[int, int] | None) -> int | None:
    """Run-queue wait accrued between two readings; threads born in between count in full."""
    if before is None or after is None:
        return None
    return sum(max(0, value - before.get(tid, 0)) for tid, value in after.items())


@dataclass
class IdleReport:
    waited_s: float
    idle: bool
    cpu_percent: float | None
    load1: float | None

    def text(self) -> str:
        state = "idle" if self.idle else "still busy (measured anyway)"
        cpu = f"{self.cpu_percent:.0f}% CPU" if self.cpu_percent is not None else "CPU% unknown"
        load = f"load {self.load1:.2f}" if self.load1 is not None else "load unknown"
        return f"machine {state} after {self.waited_s:.1f} s ({cpu}, {load})"


def wait_for_idle(max_wait_s: float = 30.0, cpu_threshold: float = 25.0, load_per_core: float = 0.5, poll_s: float = 0.5) -> IdleReport:
    """Block until system CPU use and the 1-minute load are low, or ``max_wait_s`` passes.

    Returns what it saw so the caller can say "measured on a busy machine"
    instead of silently publishing noisy numbers.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a pinned dependency
        psutil = None
    cores = os.cpu_count() or 1
    start = time.monotonic()
    cpu = load1 = None
    while True:
        cpu = psutil.cpu_percent(interval=poll_s) if psutil else None
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            load1 = None
        # The load average lags by a minute: it decides only when psutil is missing.
        if cpu is not None:
            idle = cpu <= cpu_threshold
        else:
            idle = load1 is None or load1 <= load_per_core * cores
        waited = time.monotonic() - start
        if idle or waited >= max_wait_s:
            return IdleReport(waited, idle, cpu, load1)
        if not psutil:
            time.sleep(poll_s)


#: The thread pool every build of ours runs on: TVM keeps one per process.
TVM_POOL = "tvm"


@dataclass
class Candidate:
    """Something to time: ``run()`` executes it once, synchronously.

    ``pool`` names the thread pool the run uses (builds of ours share :data:`TVM_POOL`;
    each onnxruntime session and torch has its own), so that :func:`measure_interleaved`
    can tell when the next run would share the machine with the previous pool's
    still-spinning workers.
    """

    name: str
    run: Callable[[], object]
    pool: str = TVM_POOL


@dataclass
class Timings:
    name: str
    clean_s: list[float] = field(default_factory=list)
    dropped: int = 0
    attempts: int = 0
    topped_up: int = 0  # too few clean rounds: this many of the least-disturbed dirty rounds were kept too
    dirty_runs: int = 0  # this candidate's own runs over the wait threshold

    def summary(self) -> dict:
        stats = summarize(self.clean_s) if self.clean_s else {"median_ms": float("nan"), "min_ms": float("nan"), "max_ms": float("nan"), "p90_ms": float("nan"), "runs": 0}
        return {**stats, "dropped": self.dropped, "attempts": self.attempts, "topped_up": self.topped_up, "dirty_runs": self.dirty_runs}


@dataclass
class CleanRunFilter:
    """A run is clean when its threads waited on a run queue for at most ``max(abs_ns, frac * run time)``."""

    abs_ns: int = 200_000
    frac: float = 0.05

    def is_clean(self, elapsed_s: float, wait_ns: int | None) -> bool:
        if wait_ns is None:
            return True  # no schedstat: nothing to judge with
        return wait_ns <= max(self.abs_ns, self.frac * elapsed_s * 1e9)


# Pause before switching candidates. After a run, TVM's pool worker keeps spinning
# (TVM_THREAD_POOL_SPIN_COUNT, default 300000 yields) for about 170 ms on this
# 2-core VM, onnxruntime's for about 40 ms (measured from /proc/<pid>/task CPU
# ticks). A shorter pause let one runtime's spinner take a core from the next
# candidate's run: with 5-20 ms every onnxruntime run after a TVM run waited for
# a CPU, which made onnxruntime look slower than it is.
SPIN_COOLDOWN_S = 0.25
# Between builds of ours: they share TVM's pool, whose spinning worker simply takes the next job.
SAME_RUNTIME_COOLDOWN_S = 0.005


def pause_before(pool: str, previous_pool: str | None) -> float:
    """Seconds to wait before a run on ``pool`` that follows a run on ``previous_pool``."""
    return SAME_RUNTIME_COOLDOWN_S if pool == previous_pool else SPIN_COOLDOWN_S


def measure_interleaved(
    candidates: list[Candidate],
    repeat: int = 20,
    warmup: int = 3,
    max_attempts_factor: int = 3,
    cooldown_s: float | None = None,
    run_filter: CleanRunFilter | None = None,
    clock: Callable[[], float] = time.perf_counter,
    read_wait: Callable[[], dict[int, int] | None] = read_run_queue_wait,
) -> list[Timings]:
    """Rounds in which every candidate runs once (order rotated), until ``repeat`` clean rounds.

    Selection is per *round*, not per run: a round is kept only if every
    candidate's run in it was clean, so all candidates are compared over the
    same moments of the machine. If fewer than ``repeat`` rounds are clean
    within ``repeat * max_attempts_factor`` rounds (a saturated machine), the
    least-disturbed rounds (smallest worst wait fraction) are kept as well and
    counted in ``topped_up``. With several candidates a pause goes before every
    run (a single candidate's runs are not separated): :data:`SPIN_COOLDOWN_S`
    when the run switches to another thread pool than the previous run's, so
    that pool's spinning workers sleep first, and :data:`SAME_RUNTIME_COOLDOWN_S`
    between runs on one pool (builds of ours share TVM's pool; a long pause would
    only make each run start cold). ``cooldown_s`` forces one fixed pause instead.
    ``clock`` and ``read_wait`` are injectable for tests.
    """
    if not candidates:
        return []
    run_filter = run_filter or CleanRunFilter()
    for cand in candidates:
        for _ in range(max(0, warmup)):
            cand.run()
    n = len(candidates)
    previous_pool = candidates[-1].pool if warmup > 0 else None  # the last warm-up run's
    clean_rounds: list[list[float]] = []
    dirty_rounds: list[tuple[float, list[float]]] = []  # (worst wait fraction, seconds per candidate)
    dirty_runs = [0] * n
    max_rounds = max(repeat, 1) * max(1, max_attempts_factor)
    rounds = 0
    while len(clean_rounds) < repeat and rounds < max_rounds:
        shift = rounds % n
        order = list(range(n))[shift:] + list(range(n))[:shift]
        rounds += 1
        seconds = [0.0] * n
        worst = 0.0
        clean = True
        for i in order:
            if n > 1:
                pause = cooldown_s if cooldown_s is not None else pause_before(candidates[i].pool, previous_pool)
                if pause:
                    time.sleep(pause)
            previous_pool = candidates[i].pool
            before = read_wait()
            start = clock()
            candidates[i].run()
            elapsed = clock() - start
            wait = wait_delta_ns(before, read_wait())
            seconds[i] = elapsed
            if not run_filter.is_clean(elapsed, wait):
                clean = False
                dirty_runs[i] += 1
                worst = max(worst, wait / (elapsed * 1e9) if elapsed > 0 else 1.0)
        if clean:
            clean_rounds.append(seconds)
        else:
            dirty_rounds.append((worst, seconds))
    kept = list(clean_rounds)
    topped_up = 0
    for _, seconds in sorted(dirty_rounds, key=lambda item: item[0])[: max(0, repeat - len(kept))]:
        kept.append(seconds)
        topped_up += 1
    results = []
    for i, cand in enumerate(candidates):
        results.append(Timings(cand.name, [r[i] for r in kept], rounds - len(kept), rounds, topped_up, dirty_runs[i]))
    return results


def drop_note(results: list[Timings]) -> str:
    """One line: how many rounds were dropped for run-queue wait (and whose runs were disturbed)."""
    if not results:
        return ""
    r0 = results[0]
    text = f"rounds dropped because threads waited for a CPU: {r0.dropped} of {r0.attempts}"
    text += " (disturbed runs: " + ", ".join(f"{r.name} {r.dirty_runs}" for r in results) + ")"
    if r0.topped_up:
        text += f"; machine saturated: {r0.topped_up} least-disturbed dirty rounds kept to reach {len(r0.clean_s)}"
    return text
