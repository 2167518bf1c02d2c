"""The generation loop, independent of the engine that runs the model.

An engine is a ``Stepper``: ``reset()`` empties its cache, ``step(token_ids, start)`` runs
the model on ``token_ids`` (the prompt, or one new token) placed at positions
``start, start+1, ...`` after the cached ones, appends their keys/values to its cache and
returns the logits of the last of them. The loop itself only chooses tokens and stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from ..errors import AutoGLMError
from .sampling import Sampler, SamplingConfig


class Stepper(Protocol):
    max_context: int | None

    def reset(self) -> None: ...

    def step(self, token_ids: np.ndarray, start: int) -> np.ndarray: ...


def prompt_array(input_ids) -> np.ndarray:
    """A prompt as a 1-D int64 array; accepts a list, a 1-D array or a [1, n] array."""
    ids = np.asarray(input_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise AutoGLMError(f"generate takes one prompt (shape [n] or [1, n]); got shape {list(np.shape(input_ids))}",
                           hint="batched generation is not supported yet: call generate once per prompt")
    if ids.size == 0:
        raise AutoGLMError("generate needs a prompt of at least one token")
    if not np.issubdtype(ids.dtype, np.integer):
        raise AutoGLMError(f"prompt token ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def stream(stepper: Stepper, input_ids, max_new_tokens: int = 64, sampling: SamplingConfig | None = None,
           eos_token_id: int | None = None, vocab_size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(token_id, logits_row)`` for each new token, stopping after ``eos_token_id`` or ``max_new_tokens``."""
    prompt = prompt_array(input_ids)
    if int(max_new_tokens) < 0:
        raise AutoGLMError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if vocab_size is not None and (prompt.min() < 0 or prompt.max() >= vocab_size):
        raise AutoGLMError(f"prompt token ids must be in [0, {vocab_size}); got {int(prompt.min())}..{int(prompt.max())}")
    limit = stepper.max_context
    if limit is not None and prompt.size > limit:
        raise AutoGLMError(f"prompt has {prompt.size} tokens but the generator's max context is {limit}",
                           hint="recompile with a larger --max-context or shorten the prompt")
    sampler = Sampler(sampling or SamplingConfig())
    stepper.reset()
    logits = stepper.step(prompt, 0)
    position = prompt.size
    for produced in range(int(max_new_tokens)):
        token = sampler(logits)
        yield token, logits
        if eos_token_id is not None and token == eos_token_id:
            return
        if produced + 1 == int(max_new_tokens) or (limit is not None and position >= limit):
            return  # no step for a token nobody asks for; the cache is full at max context
        logits = stepper.step(np.array([token], dtype=np.int64), position)
        position += 1


def generate(stepper: Stepper, input_ids, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_token_id: int | None = None, seed: int = 0,
             output_logits: bool = False, streaming: bool = False, vocab_size: int | None = None):
    """The public ``generate``: new token ids (np.int64 [n]), or ``(ids, logits[n, vocab])``, or an iterator of ids."""
    sampling = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    tokens = stream(stepper, input_ids, max_new_tokens, sampling, eos_token_id, vocab_size)
    if streaming:
        return (token for token, _ in tokens)
    ids, rows = [], []
    for token, row in tokens:
        ids.append(token)
        if output_logits:
            rows.append(np.asarray(row, dtype=np.float32).reshape(-1))
    ids = np.array(ids, dtype=np.int64)
    if output_logits:
        return ids, (np.stack(rows) if rows else np.zeros((0, vocab_size or 0), np.float32))
    return ids
