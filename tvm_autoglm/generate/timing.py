"""Timing a generation loop: prefill (time to first token) and decode tokens/s, for any stepper.

Used by ``auto-glm bench --generate`` and ``benchmarks/bench_generate.py``. The first step of a
generation is the prompt (its logits give the first token, so its time is the time to first
token); every later step is one decode step.
"""

from __future__ import annotations

import statistics
import time

from . import loop


class TimedStepper:
    """Wraps a stepper and records the wall time of each step of the current generation."""

    def __init__(self, stepper):
        self.inner = stepper
        self.max_context = getattr(stepper, "max_context", None)
        self.times: list[float] = []

    def reset(self) -> None:
        self.inner.reset()
        self.times = []

    def step(self, token_ids, start):
        begin = time.perf_counter()
        out = self.inner.step(token_ids, start)
        self.times.append(time.perf_counter() - begin)
        return out


def time_generation(stepper, prompt, new_tokens: int, repeat: int = 3, pause_s: float = 0.25) -> dict:
    """Medians over ``repeat`` greedy generations: prefill_ms, decode_tokens_per_s, and the tokens of the last run."""
    if new_tokens < 2:
        raise ValueError("timing decode needs at least 2 new tokens")
    timed = TimedStepper(stepper)
    prefill, decode, tokens = [], [], None
    for _ in range(max(1, int(repeat))):
        time.sleep(pause_s)  # the previous engine's thread pool keeps spinning for a while
        tokens = loop.generate(timed, prompt, max_new_tokens=new_tokens)
        prefill.append(timed.times[0])
        decode.append((len(timed.times) - 1) / sum(timed.times[1:]))
    return {"prefill_ms": statistics.median(prefill) * 1e3, "decode_tokens_per_s": statistics.median(decode),
            "tokens": [int(t) for t in tokens]}
