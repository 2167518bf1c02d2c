"""The tuning run's decisions (tuning/scheduler.py) on fake tasks and measurements: no TVM, no compile.

Expected values are worked out by hand from the rules in the scheduler's docstrings
(gain = calls x (alpha x improvement rate + (1 - alpha) x best / (1 + batches tried)),
1 % improvement threshold, budgets), not read back from the code under test.
"""

from __future__ import annotations

import math

import pytest

from tvm_autoglm.errors import AutoGLMError
from tvm_autoglm.tuning.scheduler import Budget, TaskScheduler, parse_duration


def plan(weights, best, trials=None, seconds=None, per_batch=8, patience=64, **kw) -> TaskScheduler:
    return TaskScheduler(list(weights), list(best), Budget(trials, seconds), per_batch, patience, **kw)


# ------------------------------------------------------------ budgets


def test_budget_defaults_to_1000_trials_and_validates():
    assert Budget.from_args(None, None) == Budget(1000, None)
    assert Budget.from_args(None, "1h30m") == Budget(None, 5400.0)
    assert Budget.from_args(20, "90s") == Budget(20, 90.0)
    assert Budget.from_args(0, None).trials == 0
    with pytest.raises(AutoGLMError, match=r"--trials must be >= 0 \(got -1\)"):
        Budget.from_args(-1, None)
    with pytest.raises(AutoGLMError, match="cannot read time budget 'soon'"):
        Budget.from_args(None, "soon")


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("45", 45), ("2.5m", 150), (12, 12.0), (None, None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30x", "1h 30", "m30", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(AutoGLMError, match="cannot read time budget"):
        parse_duration(text)


@pytest.mark.parametrize("trials, seconds, n_tasks, want", [
    (16, None, 2, 8),  # 16 // 6 = 2, raised to the floor of 8
    (1000, None, 3, 32),  # 1000 // 9 = 111, capped at 32
    (300, None, 5, 20),  # 300 // 15
    (None, 3600.0, 10, 30),  # 3600 s / 4 s per trial = 900; 900 // 30
    (None, 60.0, 1, 8),  # 15 // 3 = 5 -> 8
    (500, None, 0, 32),  # no task: divisor 1
])
def test_trials_per_batch(trials, seconds, n_tasks, want):
    assert Budget(trials, seconds).trials_per_batch(n_tasks) == want


def test_trials_per_batch_and_patience_overrides():
    assert Budget(1000, None).trials_per_batch(3, override=5) == 5
    assert Budget.patience(8) == 64 and Budget.patience(32) == 128 and Budget.patience(20) == 80
    assert Budget.patience(32, override=10) == 10


# ------------------------------------------------------------ measurements


def test_a_batch_updates_best_only_below_one_percent():
    p = plan([1, 1], [1.0e-3, 2.0e-3])
    p.record_batch(0, [[0.995e-3], [0.999e-3, 0.998e-3]], elapsed_s=1.0)  # within 1 %: no change
    assert p.best[0] == 1.0e-3 and p.since_improved[0] == 2
    p.record_batch(0, [[0.8e-3, 1.0e-3], [0.85e-3]], elapsed_s=2.0)  # means 0.9 and 0.85 ms
    assert p.best[0] == pytest.approx(0.85e-3) and p.since_improved[0] == 0
    assert p.trials == 4 and p.task_trials == [4, 0]
    assert p.history[0] == [1.0e-3, pytest.approx(0.85e-3)]


def test_failed_candidates_count_as_trials_but_not_times():
    p = plan([1], [None])
    p.record_batch(0, [None, [], None], elapsed_s=0.5)
    assert p.trials == 3 and p.best == [None] and p.start_best == [None]
    assert p.curve == [{"trials": 3, "elapsed_s": 0.5, "estimated_ms": None}]


def test_first_measurement_is_the_start_when_the_database_had_none():
    p = plan([2, 3], [1.0e-3, None])
    assert p.start_estimate_ms() is None and p.estimate_ms(p.best) is None
    p.record_batch(1, [[4.0e-3], [5.0e-3]], elapsed_s=1.0)
    # start: 2 x 1 ms + 3 x 4 ms; the database's time stays the start of task 0
    assert p.start_best == [1.0e-3, 4.0e-3]
    assert p.start_estimate_ms() == pytest.approx(14.0)
    p.record_batch(1, [[2.0e-3]], elapsed_s=2.0)
    assert p.start_estimate_ms() == pytest.approx(14.0)
    assert p.estimate_ms(p.best) == pytest.approx(8.0)
    assert [c["estimated_ms"] for c in p.curve] == [pytest.approx(14.0), pytest.approx(8.0)]
    assert [c["trials"] for c in p.curve] == [2, 3]


def test_a_known_start_is_kept_even_after_improvements():
    p = plan([1], [3.0e-3])
    p.record_batch(0, [[1.0e-3]], elapsed_s=1.0)
    assert p.start_estimate_ms() == pytest.approx(3.0)
    assert p.estimate_ms(p.best) == pytest.approx(1.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 weights but 1 best"):
        plan([1, 1], [None])


# ------------------------------------------------------------ stop rules


def test_trial_budget_stops_the_run():
    p = plan([1, 1], [None, None], trials=10)
    assert p.record_batch(0, [[1.0]] * 6, elapsed_s=1.0).stop is None
    out = p.record_batch(1, [[1.0]] * 6, elapsed_s=2.0)
    assert out.stop == "trials" and not out.retire_task
    assert p.next_task([False, False]) == -1
    assert p.final_reason() == "trials"


def test_time_budget_stops_the_run():
    p = plan([1], [None], seconds=60.0)
    assert p.record_batch(0, [[1.0]], elapsed_s=59.9).stop is None
    assert p.record_batch(0, [[1.0]], elapsed_s=60.0).stop == "time"
    assert p.final_reason() == "time"


def test_trials_budget_is_checked_before_time():
    p = plan([1], [None], trials=2, seconds=10.0)
    assert p.record_batch(0, [[1.0], [1.0]], elapsed_s=11.0).stop == "trials"


def test_a_task_without_improvement_for_patience_trials_retires():
    p = plan([1, 1], [1.0, 1.0], patience=16)
    assert not p.record_batch(0, [[1.0]] * 8, elapsed_s=1).retire_task
    assert p.record_batch(0, [[1.0]] * 8, elapsed_s=2).retire_task  # 16 trials since the last improvement
    assert not p.record_batch(1, [[0.5]] * 8, elapsed_s=3).retire_task
    # an improvement resets the count
    p.record_batch(1, [[0.5]] * 8, elapsed_s=4)
    assert p.since_improved[1] == 8
    assert not p.record_batch(1, [[0.1]], elapsed_s=5).retire_task and p.since_improved[1] == 0


def test_a_run_stop_does_not_also_retire_the_task():
    p = plan([1], [1.0], trials=16, patience=16)
    out = p.record_batch(0, [[1.0]] * 16, elapsed_s=1)
    assert out.stop == "trials" and not out.retire_task


def test_without_a_budget_stop_the_run_converged():
    assert plan([1], [None]).final_reason() == "converged"
    p = plan([1], [None], trials=100)
    p.record_batch(0, [[1.0]] * 10, elapsed_s=1)
    assert p.final_reason() == "converged"  # every task retired before the budget


def test_interrupt_wins_over_budget_stops_and_otherwise_the_first_reason_stays():
    p = plan([1], [None], trials=4)
    p.request_stop("interrupted")  # Ctrl-C, then the batch in flight reaches the budget
    p.record_batch(0, [[1.0]] * 4, elapsed_s=1)
    assert p.final_reason() == "interrupted"
    q = plan([1], [None], trials=4, seconds=1.0)
    q.request_stop("time")
    q.request_stop("trials")
    assert q.stop_reason == "time"
    q.request_stop("interrupted")
    assert q.stop_reason == "interrupted"


def test_eta_uses_the_tighter_budget():
    p = plan([1], [None], trials=100, seconds=1000.0)
    assert p.eta_s(5.0) is None  # nothing measured yet
    p.record_batch(0, [[1.0]] * 10, elapsed_s=20.0)  # 2 s per trial: 90 trials left = 180 s
    assert p.eta_s(20.0) == pytest.approx(180.0)
    assert p.eta_s(900.0) == pytest.approx(100.0)  # 90 x 90 s per trial > 100 s of time budget left
    only_time = plan([1], [None], seconds=50.0)
    only_time.record_batch(0, [[1.0]], elapsed_s=10.0)
    assert only_time.eta_s(10.0) == pytest.approx(40.0)


# ------------------------------------------------------------ task choice


def test_every_live_task_once_in_order_first():
    p = plan([1, 1, 1, 1], [None] * 4)
    terminated = [False, True, False, False]
    assert [p.next_task(terminated) for _ in range(3)] == [0, 2, 3]
    # then by score: all unmeasured (inf), so the lowest id
    assert p.next_task(terminated) == 0


def test_no_live_task_ends_the_run():
    p = plan([1, 1], [None, None])
    assert p.next_task([True, True]) == -1


def test_score_by_hand():
    # weight 3, best now 1.0 ms, history 4.0, 3.0, 2.0, 1.0 ms (window 3: before = 4.0), 16 trials at 8 per batch
    p = plan([3, 1], [4.0e-3, 1.0e-3], per_batch=8)
    for t in (3.0e-3, 2.0e-3, 1.0e-3):
        p.record_batch(0, [[t]] * 4, elapsed_s=1)
    p.history[0].insert(0, 4.0e-3)
    p.task_trials[0] = 16
    backward = (4.0e-3 - 1.0e-3) / 3
    forward = 1.0e-3 / (1 + 2)
    assert p.score(0) == pytest.approx(3 * (0.5 * backward + 0.5 * forward))
    assert p.score(1) == math.inf  # never measured in this run: optimism first


def test_score_with_short_history_uses_the_first_entry():
    p = plan([2], [None], per_batch=4)
    p.record_batch(0, [[6.0e-3]] * 4, elapsed_s=1)  # history [6 ms]
    p.record_batch(0, [[3.0e-3]] * 4, elapsed_s=2)  # history [6, 3 ms]
    backward = (6.0e-3 - 3.0e-3) / 2
    forward = 3.0e-3 / (1 + 8 / 4)
    assert p.score(0) == pytest.approx(2 * (0.5 * backward + 0.5 * forward))


def test_after_the_first_round_the_costliest_gain_goes_next():
    # three tasks, same times, calls 1, 5, 2.2: after one batch each, no improvement rate yet, so the
    # gain is the optimism term calls x 0.5 x 1 ms / (1 + batches): 0.25, 1.25, 0.55 ms
    p = plan([1, 5, 2.2], [None] * 3, per_batch=4)
    live = [False] * 3
    for expect in (0, 1, 2):
        assert p.next_task(live) == expect
        p.record_batch(expect, [[1.0e-3]] * 4, elapsed_s=1)
    # the 5-call task keeps the batches while 2.5 ms / (1 + b) > 0.55 ms: b = 1, 2, 3; at b = 4 the 2.2-call task
    picks = []
    for _ in range(4):
        task = p.next_task(live)
        picks.append(task)
        p.record_batch(task, [[1.0e-3]] * 4, elapsed_s=1)
    assert picks == [1, 1, 1, 2]


def test_ties_go_to_the_lowest_id_and_terminated_tasks_are_never_chosen():
    p = plan([1, 1, 1], [None] * 3, per_batch=4)
    live = [False] * 3
    for expect in (0, 1, 2):
        assert p.next_task(live) == expect
        p.record_batch(expect, [[1.0e-3]] * 4, elapsed_s=1)
    assert p.next_task(live) == 0
    assert p.next_task([True, False, False]) == 1
    assert p.next_task([True, True, False]) == 2
