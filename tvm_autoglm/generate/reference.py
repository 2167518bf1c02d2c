"""onnxruntime running the ONNX model with its own cache loop: the reference for generation.

This is what users do today (and what the compiled generator must match token for
token): prefill feeds the whole prompt with an empty past (length 0); each decode step
feeds one token and the previous step's ``present`` tensors as ``past``, so the
whole cache is copied into and out of onnxruntime every step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import loop
from .layout import CacheLayout, detect


def step_feeds(layout: CacheLayout, ids: np.ndarray, start: int, past: dict) -> dict:
    """The feeds of one cache-loop step: ``ids`` [batch, n] at positions ``start..start+n`` after ``past``."""
    rows, n = ids.shape
    feeds = {layout.input_ids: ids, layout.attention_mask: np.ones((rows, start + n), np.int64), **past}
    if layout.position_ids:
        feeds[layout.position_ids] = np.tile(np.arange(start, start + n, dtype=np.int64), (rows, 1))
    return feeds


def presents_as_past(layout: CacheLayout, values: dict) -> dict:
    """A step's ``present`` outputs (by name) as the next step's ``past`` inputs."""
    return {name: values[out] for pair_in, pair_out in zip(layout.past, layout.present) for name, out in zip(pair_in, pair_out)}


class OrtStepper:
    """A :class:`loop.Stepper` over an onnxruntime session of a cache-layout ONNX model."""

    max_context = None

    def __init__(self, model_path, threads: int | None = None, layout: CacheLayout | None = None):
        import onnx

        from ..measure.candidates import ort_session

        proto = onnx.load(str(model_path), load_external_data=False)
        self.layout = layout or detect(proto, str(model_path))
        # the one onnxruntime set-up (intra-op = ``threads``, inter-op 1); 0 lets onnxruntime choose, as before
        self.session = ort_session(Path(model_path), int(threads or 0))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.vocab_size = None
        self.reset()

    def reset(self) -> None:
        lay = self.layout
        empty = np.zeros((1, lay.kv_heads, 0, lay.head_dim), dtype=lay.dtype)
        self.past = {name: empty for name in lay.past_names()}
        self.length = 0

    def step(self, token_ids: np.ndarray, start: int) -> np.ndarray:
        lay = self.layout
        if start != self.length:
            raise ValueError(f"step at position {start} but the cache holds {self.length} tokens")
        ids = np.asarray(token_ids, np.int64).reshape(1, -1)
        values = dict(zip(self.output_names, self.session.run(None, step_feeds(lay, ids, start, self.past))))
        self.past = presents_as_past(lay, values)
        self.length = start + ids.shape[1]
        return values[lay.logits][0, -1]

    def generate(self, input_ids, **kwargs):
        """Same signature and result as ``CompiledGenerator.generate``."""
        return loop.generate(self, input_ids, **kwargs)
