"""What one pass did, for the manifest and ``auto-glm inspect``.

Its own small module, not ``pipeline``'s: passes that run outside the pass plan
(the precision rewrites in ``quantize``) report too, and the pipeline imports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PassReport:
    """What one pass did: time taken and the op histogram of ``main`` before and after."""

    name: str
    seconds: float
    ops_before: dict
    ops_after: dict

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "ops_before": self.ops_before, "ops_after": self.ops_after}
