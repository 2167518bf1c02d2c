"""What a pass did, counted by the pass itself: rewrites made, and candidates declined with why.

An op histogram before and after a pass says that ops changed, not how many rewrites the
pass made (a folded Conv+BN removes one batch_norm but also turns a reshape into a
constant), and never why a candidate was left alone. So each pass asks for the tally of
the run in progress (:func:`current`) and records into it: ``tally.rewrote()`` per
rewrite, ``tally.declined("conv2d lv3: weight is not a constant")`` per candidate it
matched but would not rewrite. The pipeline opens one tally per pass (:func:`recording`)
and copies it into ``PassReport.rewrites`` / ``PassReport.declines``; ``auto-glm inspect``
shows the counts and ``--explain-pass NAME`` the reasons.

Outside a recording (a pass called directly, e.g. in a test) :func:`current` hands out a
throwaway tally, so a pass never has to ask whether anyone is listening.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator


class PassTally:
    """Rewrites and decline reasons of one run of one pass.

    ``counted`` says whether the pass asked for its tally, i.e. counts for itself (a count
    of 0 is then a real 0); a pass that never asks (TVM's own passes) leaves it False, and
    the pipeline falls back to the op histogram for a rough count. A reason is kept once: ``rewrite_call`` revisits an
    unchanged candidate on each of its rounds.
    """

    def __init__(self) -> None:
        self.rewrites = 0
        self.counted = False
        self._declines: dict[str, None] = {}

    def rewrote(self, count: int = 1) -> None:
        self.rewrites += count

    def declined(self, reason: str) -> None:
        self._declines.setdefault(reason, None)

    @property
    def declines(self) -> list[str]:
        return list(self._declines)


_CURRENT: contextvars.ContextVar[PassTally | None] = contextvars.ContextVar("autoglm_pass_tally", default=None)


def current() -> PassTally:
    """The tally of the pass running now (marked as counted), or a throwaway one outside :func:`recording`."""
    tally = _CURRENT.get()
    if tally is None:
        tally = PassTally()
    tally.counted = True
    return tally


@contextlib.contextmanager
def recording() -> Iterator[PassTally]:
    """Open a fresh tally for one pass run; nested recordings do not leak into the outer one."""
    tally = PassTally()
    token = _CURRENT.set(tally)
    try:
        yield tally
    finally:
        _CURRENT.reset(token)


def binding_name(value, var_of: dict) -> str:
    """``op var`` for a matched call (``conv2d lv3``), the name a user finds in ``--print-ir-after``."""
    op = getattr(getattr(value, "op", None), "name", "expr").removeprefix("relax.")
    var = var_of.get(value)
    return f"{op} {var.name}" if var is not None else op
