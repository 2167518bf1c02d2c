"""``auto-glm ab`` on real builds: O3 (fused) beats O0 (unfused) significantly; a build against itself does not."""

from __future__ import annotations

import json
from pathlib import Path

from _measure_cli import assert_one_line_error

from tvm_autoglm.cli.cmd_ab import ab, parity


def test_o3_is_faster_than_o0(chain_builds):
    result = ab(str(chain_builds[0]), str(chain_builds[3]), repeat=12, warmup=1, idle_wait=2.0)
    cmp = result["comparison"]
    assert cmp["p_value"] < 0.05, result
    assert cmp["verdict"] == "faster", result
    assert cmp["ci_high"] < 1.0
    # same computation, different kernels: outputs agree to fp32 rounding
    (name,) = result["parity"]
    assert result["parity"][name]["max_abs"] <= 1e-5


class _PositionBiasedClock:
    """A fake clock for measure_interleaved: each timed run lasts a seeded random ~1 ms, and
    the first run of every round 10% longer (a cold cache, a spinning pool, ...), whichever
    build it is. Only the order of the runs can then make one build look faster."""

    def __init__(self, builds: int = 2, seed: int = 0):
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.builds = builds
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a run: advance by its duration
            position = (self.calls // 2 - 1) % self.builds
            self.now += 1e-3 * float(self.rng.lognormal(0.0, 0.03)) * (1.10 if position == 0 else 1.0)
        return self.now


def test_build_against_itself_is_no_significant_difference(chain_builds, monkeypatch):
    """The whole A/B path on real builds, timed by the fake clock above (deterministic: no
    wall-clock verdict). The rounds rotate the order, so the position bias lands on A and B
    alike; a method that always ran A first would call B faster (checked by hand)."""
    import functools

    from tvm_autoglm.measure import timing

    clock = _PositionBiasedClock()
    monkeypatch.setattr(timing, "measure_interleaved", functools.partial(timing.measure_interleaved, clock=clock, read_wait=lambda: None))
    result = ab(str(chain_builds[3]), str(chain_builds[3]), repeat=12, warmup=1, idle_wait=0.0)
    assert clock.calls == 2 * 2 * 12  # every timed run went through the fake clock (12 clean rounds of 2)
    assert all(d["max_abs"] == 0.0 for d in result["parity"].values())
    assert result["a"]["runs"] == result["b"]["runs"] == 12
    assert result["comparison"]["verdict"] == "no significant difference", result["comparison"]


def test_parity_reports_max_abs_and_rel():
    import numpy as np

    d = parity({"y": np.array([1.0, 2.0, -4.0], np.float32)}, {"y": np.array([1.0, 2.5, -4.0], np.float32)})
    assert d["y"]["max_abs"] == 0.5 and d["y"]["max_rel"] == 0.25


def test_cli_ab_json_and_bad_repeat(mm_build, auto_glm):
    so = mm_build["so"]
    assert_one_line_error(auto_glm("ab", "--a", so, "--b", so, "--repeat", "2"), "--repeat")
    assert_one_line_error(auto_glm("ab", "--a", so, "--b", Path(so).with_name("nope.so")), "nope.so")
    code, out, err = auto_glm("ab", "--a", so, "--b", so, "--repeat", "5", "--warmup", "1", "--idle-wait", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["a"]["runs"] == data["b"]["runs"] == 5
    assert {"ratio", "ci_low", "ci_high", "p_value", "verdict"} <= set(data["comparison"])
