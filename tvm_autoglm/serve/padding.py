"""Length buckets for dynamic artifacts: which symbolic dims the server may pad, and how to undo it.

Padding a request along a symbolic dim (``seq``) changes what a model computes unless the model
ignores the padded positions. The server cannot prove that, so it pads only when the user states
it twice over:

* ``--length-bucket seq=16``: round every request's ``seq`` up to a multiple of 16 (capped at the
  build's maximum), so requests of near lengths share one padded shape and can run in one call;
* ``--padding-mask seq=attention_mask``: the model masks padding along ``seq`` through the input
  ``attention_mask``, which the server sets to zero on every padded position.

A bucket without its mask statement is refused at start-up, as is a mask input the model lacks or
that does not carry the dim. Each response is sliced back to its own length along every output dim
that *is* the symbol (``[batch, seq, 64]``); an output dim that depends on it any other way
(``seq * 2``, ``seq + 1``) cannot be sliced back, so that is refused at start-up too. Outputs
without the dim (a pooled vector) are returned as computed: the mask statement covers them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ArtifactError, AutoGLMError

_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$")


def parse_length_buckets(items: list[str] | None) -> dict[str, int]:
    """``["seq=16"]`` -> ``{"seq": 16}``."""
    buckets: dict[str, int] = {}
    for item in items or []:
        match = _ITEM.match(item.strip())
        if not match or not match.group(2).isdigit() or int(match.group(2)) < 1:
            raise AutoGLMError(f"bad --length-bucket '{item}': expected DIM=GRANULARITY with a granularity of 1 or more (e.g. seq=16)")
        buckets[match.group(1)] = int(match.group(2))
    return buckets


def parse_padding_masks(items: list[str] | None) -> dict[str, str]:
    """``["seq=attention_mask"]`` -> ``{"seq": "attention_mask"}``."""
    masks: dict[str, str] = {}
    for item in items or []:
        match = _ITEM.match(item.strip())
        if not match:
            raise AutoGLMError(f"bad --padding-mask '{item}': expected DIM=MASK_INPUT (e.g. seq=attention_mask)")
        masks[match.group(1)] = match.group(2)
    return masks


@dataclass
class PaddingPlan:
    """The checked bucket statements: ``{symbol: granularity}``, ``{symbol: mask input}``, and per output
    the ``(axis, symbol)`` pairs to slice back to each request's own length."""

    buckets: dict[str, int]
    masks: dict[str, str]
    sliced: dict[str, list[tuple[int, str]]]
    ranges: dict[str, tuple[int, int]]

    def padded_size(self, symbol: str, size: int) -> int:
        """``size`` rounded up to the bucket's granularity, never past the build's maximum."""
        granularity = self.buckets.get(symbol)
        if granularity is None:
            return size
        return min(-(-size // granularity) * granularity, self.ranges[symbol][1])

    def describe(self) -> str:
        return ", ".join(f"{s} padded to multiples of {g} (masked by '{self.masks[s]}')" for s, g in sorted(self.buckets.items()))


def plan_padding(manifest: dict, buckets: dict[str, int], masks: dict[str, str], batch_symbol: str | None) -> PaddingPlan | None:
    """Check the user's bucket and mask statements against the artifact; None when nothing is bucketed."""
    if not buckets and not masks:
        return None
    symbolic = manifest.get("symbolic_dims") or {}
    ranges = {name: (int(r["min"]), int(r["max"])) for name, r in symbolic.items()}
    for flag, names in (("--length-bucket", buckets), ("--padding-mask", masks)):
        for symbol in names:
            if symbol not in ranges:
                known = sorted(ranges) or "none (a static build: every request has the manifest's shapes)"
                raise ArtifactError(f"{flag} {symbol}: '{symbol}' is not a symbolic dim of this build; its symbolic dims are {known}")
    for symbol, granularity in buckets.items():
        if symbol == batch_symbol:
            raise ArtifactError(f"--length-bucket {symbol}={granularity}: '{symbol}' is the batch dim, which grows by stacking requests (--max-batch), not by padding")
        if symbol not in masks:
            raise ArtifactError(
                f"--length-bucket {symbol}={granularity} pads requests along '{symbol}', which is only sound if the model ignores the padding: "
                f"name the input that masks it with --padding-mask {symbol}=MASK_INPUT (zero on padded positions), or serve without --length-bucket"
            )
    inputs = {spec["name"]: spec for spec in manifest["inputs"]}
    for symbol, mask in masks.items():
        if symbol not in buckets:
            raise ArtifactError(f"--padding-mask {symbol}={mask} without --length-bucket {symbol}=GRANULARITY: nothing would be padded along '{symbol}'")
        if mask not in inputs:
            raise ArtifactError(f"--padding-mask {symbol}={mask}: the model has no input '{mask}'; its inputs are {sorted(inputs)}")
        if symbol not in inputs[mask]["shape"]:
            raise ArtifactError(f"--padding-mask {symbol}={mask}: input '{mask}' has shape {inputs[mask]['shape']}, without the dim '{symbol}' it would mask")
    sliced: dict[str, list[tuple[int, str]]] = {}
    for spec in manifest["outputs"]:
        for axis, dim in enumerate(spec["shape"]):
            if not isinstance(dim, str):
                continue
            for symbol in buckets:
                if dim == symbol:
                    sliced.setdefault(spec["name"], []).append((axis, symbol))
                elif re.search(rf"\b{re.escape(symbol)}\b", dim):
                    raise ArtifactError(
                        f"--length-bucket {symbol}: output '{spec['name']}' dim {axis} is '{dim}', which depends on '{symbol}' in a way "
                        f"the server cannot slice back to each request's length; serve without --length-bucket {symbol}"
                    )
    return PaddingPlan(dict(buckets), dict(masks), sliced, {s: ranges[s] for s in buckets})
