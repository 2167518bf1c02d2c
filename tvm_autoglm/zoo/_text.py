"""Glue shared by the transformers text models (BERT, GPT-NeoX): token inputs and the export wrapper.

Both take ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); the mask
is an input (not all ones baked in) so that masking is part of the exported
graph. Torch is imported only when a model is built, never by the zoo's index.
"""

from __future__ import annotations

from collections.abc import Callable

from ._torch import randomize_1d, require_torch, seeded

INPUTS = ("input_ids", "attention_mask")


def input_shapes(seq: int, batch: int) -> dict[str, tuple[list[int], str]]:
    return {name: ([batch, seq], "int64") for name in INPUTS}


def token_inputs(vocab: int, seq: int, batch: int, rng, valid: Callable[[int], int]) -> dict:
    """Token ids in range and a right-padding mask; row ``b`` keeps its first ``valid(b)`` positions."""
    import numpy as np

    ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(batch):
        mask[b, valid(b):] = 0
    return {"input_ids": ids, "attention_mask": mask}


def transformers():
    """The transformers module, imported after require_torch has put the hub in offline mode."""
    require_torch()
    import transformers as module

    return module


def build(construct: Callable, seed: int, outputs: tuple[str, ...], **forward_kwargs):
    """``construct()`` under a seeded RNG with distinct 1-D weights, wrapped for export.

    The wrapper's forward takes the inputs positionally, in INPUTS order, and
    returns the named fields of the transformers output (a tensor when one),
    since the exporters trace positional tensors, not ModelOutput objects.
    """
    torch = require_torch()
    with seeded(seed):
        model = construct()
    randomize_1d(model, seed)

    class TextModel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **forward_kwargs)
            values = tuple(getattr(out, name) for name in outputs)
            return values if len(values) > 1 else values[0]

    return TextModel(model).eval()
