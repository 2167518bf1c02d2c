"""What one pass did, for the manifest and ``auto-glm inspect``.

Its own small module, not ``pipeline``'s: passes that run outside the pass plan
(the precision rewrites in ``quantize``) report too, and the pipeline imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassReport:
    """What one pass did: time taken, the op histogram of ``main`` before and after, and the
    pass's own count of rewrites and reasons for the candidates it declined (``passes/tally.py``).

    ``rewrites_estimated`` marks a pass that does not count itself (TVM's own passes): its
    ``rewrites`` is the number of calls the histogram gained or lost, not a count of rewrites.
    """

    name: str
    seconds: float
    ops_before: dict
    ops_after: dict
    rewrites: int | None = None
    declines: list[str] = field(default_factory=list)
    rewrites_estimated: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "ops_before": self.ops_before, "ops_after": self.ops_after,
                "rewrites": self.rewrites, "rewrites_estimated": self.rewrites_estimated, "declines": list(self.declines)}
