"""The clean-run filter: rounds whose threads waited for a CPU are dropped (fake clock, fake schedstat)."""

from __future__ import annotations

import os
import threading

import pytest

from tvm_autoglm.measure import timing
from tvm_autoglm.measure.timing import Candidate, CleanRunFilter, drop_note, measure_interleaved, read_run_queue_wait, wait_delta_ns


class FakeMachine:
    """A clock and a schedstat reader; each candidate replays its own script of (run seconds, wait ns)."""

    def __init__(self):
        self.now = 0.0
        self.waited = 0

    def clock(self):
        return self.now

    def read_wait(self):
        return {1: self.waited}

    def make_run(self, name, script, log):
        script = list(script)

        def run():
            seconds, wait_ns = script.pop(0)
            self.now += seconds
            self.waited += wait_ns
            log.append((name, seconds))

        return run


def test_rounds_with_run_queue_wait_are_dropped():
    # 5 clean rounds wanted. B's 3rd run waited 5 ms of its 21.3 ms for a CPU: that whole round is dropped.
    machine = FakeMachine()
    log = []
    a_script = [(0.010, 0)] * 6
    b_script = [(0.020, 0)] * 2 + [(0.0213, 5_000_000)] + [(0.020, 0)] * 3
    cands = [Candidate("A", machine.make_run("A", a_script, log)), Candidate("B", machine.make_run("B", b_script, log))]
    a, b = measure_interleaved(cands, repeat=5, warmup=0, cooldown_s=0, clock=machine.clock, read_wait=machine.read_wait)
    assert a.dropped == b.dropped == 1 and a.attempts == 6
    assert b.dirty_runs == 1 and a.dirty_runs == 0
    assert len(a.clean_s) == len(b.clean_s) == 5
    assert all(abs(t - 0.020) < 1e-9 for t in b.clean_s)  # the disturbed run is gone
    assert a.topped_up == 0
    assert "1 of 6" in drop_note([a, b])


def test_order_rotates_between_rounds():
    machine = FakeMachine()
    log = []
    cands = [Candidate("A", machine.make_run("A", [(0.001, 0)] * 3, log)), Candidate("B", machine.make_run("B", [(0.001, 0)] * 3, log))]
    measure_interleaved(cands, repeat=3, warmup=0, cooldown_s=0, clock=machine.clock, read_wait=machine.read_wait)
    assert [name for name, _ in log] == ["A", "B", "B", "A", "A", "B"]


def test_pause_follows_the_thread_pool_switches_not_the_caller(monkeypatch):
    # TVM's pool worker spins ~170 ms after a run, onnxruntime's ~40 ms: a run on another pool than
    # the previous run's waits SPIN_COOLDOWN_S; runs on one pool (builds of ours share TVM's) wait
    # the short pause. A single candidate's series gets no pause at all.
    assert timing.SPIN_COOLDOWN_S >= 0.2 > timing.SAME_RUNTIME_COOLDOWN_S
    spin, same = timing.SPIN_COOLDOWN_S, timing.SAME_RUNTIME_COOLDOWN_S
    slept, log = [], []
    monkeypatch.setattr(timing.time, "sleep", lambda s: (slept.append(s), log.append("pause")))
    machine = FakeMachine()
    cands = [
        Candidate("A", machine.make_run("A", [(0.001, 0)] * 2, log)),
        Candidate("B", machine.make_run("B", [(0.001, 0)] * 2, log)),
        Candidate("O", machine.make_run("O", [(0.001, 0)] * 2, log), pool="onnxruntime-1"),
    ]
    measure_interleaved(cands, repeat=2, warmup=0, clock=machine.clock, read_wait=machine.read_wait)
    assert [e if e == "pause" else e[0] for e in log] == ["pause", "A", "pause", "B", "pause", "O", "pause", "B", "pause", "O", "pause", "A"]
    # round 1: nothing ran before A; A -> B same pool; B -> O switch. round 2: O -> B, B -> O, O -> A all switch
    assert slept == [spin, same, spin, spin, spin, spin]
    slept.clear()
    # two onnxruntime sessions have two pools
    cands = [Candidate(n, machine.make_run(n, [(0.001, 0)] * 2, []), pool=f"onnxruntime-{n}") for n in ("P", "Q")]
    measure_interleaved(cands, repeat=1, warmup=1, clock=machine.clock, read_wait=machine.read_wait)
    assert slept == [spin, spin]  # the warm-up ended on Q: P switches, then Q switches back
    slept.clear()
    cands = [Candidate(n, machine.make_run(n, [(0.001, 0)] * 2, [])) for n in ("A", "B")]
    measure_interleaved(cands, repeat=2, warmup=0, clock=machine.clock, read_wait=machine.read_wait, cooldown_s=0.1)
    assert slept == [0.1] * 4  # a forced pause overrides
    slept.clear()
    single = [Candidate("A", machine.make_run("A", [(0.001, 0)] * 3, []))]
    measure_interleaved(single, repeat=3, warmup=0, clock=machine.clock, read_wait=machine.read_wait)
    assert slept == []


def test_saturated_machine_keeps_least_disturbed_rounds_and_says_so():
    # Every run waits; waits grow with the round: the first rounds are the least disturbed.
    script = [(0.010 + 0.001 * r, (r + 1) * 1_000_000) for r in range(9)]
    machine = FakeMachine()
    cands = [Candidate("A", machine.make_run("A", script, [])), Candidate("B", machine.make_run("B", script, []))]
    a, b = measure_interleaved(cands, repeat=3, warmup=0, cooldown_s=0, clock=machine.clock, read_wait=machine.read_wait, max_attempts_factor=3)
    assert a.attempts == 9 and a.topped_up == 3 and len(a.clean_s) == 3
    assert b.dirty_runs == 9
    assert sorted(round(t, 6) for t in a.clean_s) == [0.010, 0.011, 0.012]  # the three least-disturbed rounds
    assert "saturated" in drop_note([a, b])


def test_threshold_scales_with_run_time():
    f = CleanRunFilter(abs_ns=200_000, frac=0.05)
    assert f.is_clean(0.001, 150_000)  # under the absolute floor
    assert not f.is_clean(0.001, 300_000)
    assert f.is_clean(0.100, 4_000_000)  # 4% of a 100 ms run
    assert not f.is_clean(0.100, 6_000_000)
    assert f.is_clean(0.1, None)  # no schedstat: cannot judge


def test_wait_delta_counts_new_threads_and_ignores_exited_ones():
    assert wait_delta_ns({1: 100, 2: 50}, {1: 400, 3: 70}) == 300 + 70
    assert wait_delta_ns(None, {1: 5}) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux /proc only")
def test_real_schedstat_sees_every_thread():
    started = threading.Event()
    stop = threading.Event()

    def worker():
        started.set()
        stop.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    try:
        waits = read_run_queue_wait()
        if waits is None:
            pytest.skip("kernel without schedstat")
        assert os.getpid() in waits and thread.native_id in waits
        assert all(v >= 0 for v in waits.values())
    finally:
        stop.set()
        thread.join()
