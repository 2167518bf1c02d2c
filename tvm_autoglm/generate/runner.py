"""Drive a compiled generator artifact (``compile --generate``): the lean-runtime side of generation.

Imports numpy and the TVM runtime only (through the caller's ``Session``), never the
compiler. The caches live on the device for the whole life of the stepper: ``main``
(decode) and ``prefill`` write new keys/values into them in place, so a decode step
transfers one token id, its position, the [1, max_context] mask and the logits, and
nothing proportional to the cache.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArtifactError, InputError
from ..runtime.inputs import check_index_ranges
from . import loop


class CompiledStepper:
    """A :class:`loop.Stepper` over a generator ``Session`` (see ``generate/build.py`` for the functions)."""

    def __init__(self, session):
        import tvm

        info = session.manifest.get("generator")
        if not info:
            raise ArtifactError("this artifact is not a generator; compile it with --generate --max-context N")
        self.session = session
        self.info = info
        self.cache = info["cache"]
        self.max_context = int(info["max_context"])
        self.chunk = int(info.get("prefill_chunk") or 0)
        self.index_ranges = session.manifest.get("index_ranges") or {}
        logits_spec = next(s for s in session.manifest["outputs"] if s["name"] == self.cache["logits"])
        self.vocab_size = int(logits_spec["shape"][-1])
        dev = session.device
        heads, head_dim, dtype = int(self.cache["kv_heads"]), int(self.cache["head_dim"]), self.cache["dtype"]
        past_names = [n for pair in self.cache["past"] for n in pair]
        zeros = np.zeros((1, heads, self.max_context, head_dim), dtype=dtype)
        # Zeroed once: unused slots are masked, but uninitialised memory may hold NaN, and a
        # NaN score stays NaN after the mask's large negative is added.
        self.caches = [tvm.runtime.tensor(zeros, dev) for _ in past_names]
        # masked past slots before prefill's chunk (generate/build.py prefill_dummy_slots; 1 before session 11)
        self.dummy_slots = int(info.get("prefill_dummy_slots", 1))
        self.dummy_past = [tvm.runtime.tensor(np.zeros((1, heads, self.dummy_slots, head_dim), dtype=dtype), dev)
                           for _ in past_names]
        self.mask = np.zeros((1, self.max_context), dtype=np.int64)
        self.decode = session.vm[info["functions"]["decode"]]
        self.prefill = session.vm[info["functions"]["prefill"]] if info["functions"].get("prefill") else None
        # a prefill that computes only the prompt's last logits row takes that row's index (generate/last_logits.py)
        self.prefill_last_row = info.get("prefill_logits") == "last"
        self._tensor = lambda a: tvm.runtime.tensor(a, dev)
        self.length = 0

    def reset(self) -> None:
        self.mask[:] = 0
        self.length = 0

    def _check(self, token_ids: np.ndarray, positions: np.ndarray) -> None:
        check_index_ranges({self.cache["input_ids"]: token_ids, self.cache["position_ids"]: positions}, self.index_ranges)
        if token_ids.min() < 0 or token_ids.max() >= self.vocab_size:
            raise InputError(f"token ids must be in [0, {self.vocab_size}); got {int(token_ids.min())}..{int(token_ids.max())}")

    def step(self, token_ids: np.ndarray, start: int) -> np.ndarray:
        token_ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if start != self.length:
            raise ValueError(f"step at position {start} but the cache holds {self.length} tokens")
        if start + token_ids.size > self.max_context:
            raise InputError(f"{start + token_ids.size} tokens exceed the generator's max context {self.max_context}")
        self._check(token_ids, np.arange(start, start + token_ids.size))
        logits = None
        done = 0
        if start == 0 and self.prefill is not None and token_ids.size > 1:
            done = min(token_ids.size, self.chunk)
            logits = self._prefill(token_ids[:done])
        for i in range(done, token_ids.size):
            logits = self._decode(int(token_ids[i]), start + i)
        return logits

    def _prefill(self, tokens: np.ndarray) -> np.ndarray:
        n, chunk = tokens.size, self.chunk
        ids = np.zeros((1, chunk), dtype=np.int64)
        ids[0, :n] = tokens
        slots = self.dummy_slots
        mask = np.zeros((1, slots + chunk), dtype=np.int64)
        mask[0, slots:slots + n] = 1  # the dummy past slots come first; padding after the prompt is hidden too
        positions = np.arange(chunk, dtype=np.int64).reshape(1, chunk)
        last = [self._tensor(np.array([n - 1], dtype=np.int64))] if self.prefill_last_row else []
        out = self.prefill(self._tensor(ids), self._tensor(mask), self._tensor(positions), *self.dummy_past, *self.caches,
                           self._tensor(np.zeros(1, dtype=np.int64)), *last)
        self.mask[0, :n] = 1
        self.length = n
        return out[0].numpy()[0, 0 if self.prefill_last_row else n - 1]

    def _decode(self, token: int, position: int) -> np.ndarray:
        self.mask[0, position] = 1
        out = self.decode(self._tensor(np.array([[token]], dtype=np.int64)), self._tensor(self.mask),
                          self._tensor(np.array([[position]], dtype=np.int64)), *self.caches,
                          self._tensor(np.array([position], dtype=np.int64)))
        self.length = position + 1
        return out[0].numpy()[0, -1]


def generate(session, input_ids, max_new_tokens: int = 64, *, stream: bool = False, **kwargs):
    """``Session.generate`` / ``CompiledModel.generate``: see :func:`loop.generate` for the arguments."""
    stepper = getattr(session, "_generator_stepper", None)
    if stepper is None:
        stepper = session._generator_stepper = CompiledStepper(session)
    return loop.generate(stepper, input_ids, max_new_tokens, streaming=stream, vocab_size=stepper.vocab_size, **kwargs)
