"""Next-token choice from one row of logits: greedy, or sampled with temperature / top-k / top-p.

Sampling draws from a ``numpy.random.Generator`` made from the user's seed, so the same
seed, prompt and model give the same tokens on every run and in every runtime. Logits
are promoted to float64 before the softmax so that two engines whose float32 logits
agree to a few ulps pick from (almost) the same distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AutoGLMError


@dataclass(frozen=True)
class SamplingConfig:
    """How to choose tokens; ``do_sample=False`` is greedy (argmax, lowest id on ties)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.do_sample and not self.temperature > 0:
            raise AutoGLMError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if int(self.top_k) < 0:
            raise AutoGLMError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise AutoGLMError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    """Stateful chooser: one per generation call (it owns the random generator)."""

    def __init__(self, config: SamplingConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray) -> int:
        row = np.asarray(logits, dtype=np.float64).reshape(-1)
        if not self.config.do_sample:
            return int(np.argmax(row))
        return int(self.rng.choice(row.size, p=probabilities(row, self.config)))


def probabilities(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """The distribution sampling draws from: softmax(logits / T) cut to top-k, then to the top-p nucleus."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1) / float(config.temperature)
    keep = np.ones(row.size, dtype=bool)
    if config.top_k and config.top_k < row.size:
        kth = np.partition(row, -config.top_k)[-config.top_k]
        keep &= row >= kth
    row = np.where(keep, row, -np.inf)
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    if config.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        cut = int(np.searchsorted(cumulative, config.top_p, side="left")) + 1
        nucleus = np.zeros(row.size, dtype=bool)
        nucleus[order[:cut]] = True
        probs = np.where(nucleus, probs, 0.0)
        probs /= probs.sum()
    return probs
