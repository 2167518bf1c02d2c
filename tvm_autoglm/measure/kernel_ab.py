"""Per-kernel A/B of two builds of one model (``auto-glm ab --per-kernel``).

Why: a whole-model A/B says whether a schedule change pays, not where; profiling
one build at a time compares kernels measured at different minutes, which on a
shared box can differ by 30%. Here every round profiles A and then B
(:func:`profile.interleaved_kernel_ms`), and each kernel's cell is its median over
the rounds. Kernels are matched by name; a kernel only one build has (the other
fused or split it differently) gets an empty cell on the other side, so the table
lists the kernels of both builds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class KernelPair:
    name: str
    a_ms: float | None  # median over rounds; None: build A has no such kernel
    b_ms: float | None

    @property
    def ratio(self) -> float | None:
        """B / A (< 1: B's kernel is faster); None unless both builds have the kernel."""
        if self.a_ms is None or self.b_ms is None or self.a_ms <= 0:
            return None
        return self.b_ms / self.a_ms

    @property
    def side(self) -> str:
        return "both" if self.a_ms is not None and self.b_ms is not None else ("A only" if self.b_ms is None else "B only")

    def to_json(self) -> dict:
        return {"kernel": self.name, "a_ms": self.a_ms, "b_ms": self.b_ms, "ratio_b_to_a": self.ratio, "in": self.side}


@dataclass
class KernelAB:
    a: str
    b: str
    rounds: int
    pairs: list[KernelPair]
    total_a_ms: float  # median over rounds of the sum of A's kernels
    total_b_ms: float
    parity: dict = field(default_factory=dict)
    machine: dict | None = None

    def to_json(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "rounds": self.rounds,
            "kernels": [p.to_json() for p in self.pairs],
            "total": {"a_ms": self.total_a_ms, "b_ms": self.total_b_ms, "ratio_b_to_a": self.total_b_ms / self.total_a_ms if self.total_a_ms > 0 else None},
            "parity": self.parity,
            "machine": self.machine,
        }


def pair_kernels(per_kernel_a: dict[str, list[float]], per_kernel_b: dict[str, list[float]]) -> list[KernelPair]:
    """One row per kernel name of either build (median ms over rounds), slowest first."""
    names = set(per_kernel_a) | set(per_kernel_b)
    pairs = [
        KernelPair(n, statistics.median(per_kernel_a[n]) if n in per_kernel_a else None, statistics.median(per_kernel_b[n]) if n in per_kernel_b else None)
        for n in names
    ]
    pairs.sort(key=lambda p: (-max(p.a_ms or 0.0, p.b_ms or 0.0), p.name))
    return pairs


def kernel_ab(session_a, session_b, inputs: dict, rounds: int, repeat: int = 3, warmup: int = 1, discard_rounds: int = 1,
              a_label: str = "A", b_label: str = "B") -> KernelAB:
    """Interleaved per-kernel profiles of two runtime Sessions on the same inputs."""
    from .profile import interleaved_kernel_ms

    per_kernel, totals = interleaved_kernel_ms({"A": session_a, "B": session_b}, inputs, rounds, repeat=repeat, warmup=warmup, discard_rounds=discard_rounds)
    return KernelAB(a_label, b_label, rounds, pair_kernels(per_kernel["A"], per_kernel["B"]), statistics.median(totals["A"]), statistics.median(totals["B"]))


def format_table(result: KernelAB, top: int | None = None) -> str:
    """Plain-text table: kernel, A ms, B ms, B/A; kernels of one build only show '-' on the other side."""
    pairs = result.pairs if top is None else result.pairs[:top]
    width = min(70, max([len(p.name) for p in pairs] + [len("all kernels (median of per-round sums)")]))

    def cell(value, spec):
        return format(value, spec) if value is not None else "-"

    lines = [f"{'kernel':<{width}}  {'A ms':>9}  {'B ms':>9}  {'B/A':>6}"]
    for p in pairs:
        name = p.name if len(p.name) <= width else p.name[: width - 3] + "..."
        lines.append(f"{name:<{width}}  {cell(p.a_ms, '9.3f'):>9}  {cell(p.b_ms, '9.3f'):>9}  {cell(p.ratio, '6.3f'):>6}")
    if top is not None and len(result.pairs) > top:
        lines.append(f"({len(result.pairs) - top} more kernels not shown; --top 0 shows all)")
    total_ratio = result.total_b_ms / result.total_a_ms if result.total_a_ms > 0 else None
    lines.append(f"{'all kernels (median of per-round sums)':<{width}}  {result.total_a_ms:9.3f}  {result.total_b_ms:9.3f}  {cell(total_ratio, '6.3f'):>6}")
    only_a = sum(1 for p in result.pairs if p.side == "A only")
    only_b = sum(1 for p in result.pairs if p.side == "B only")
    lines.append(f"A = {result.a}, B = {result.b}; median over {result.rounds} interleaved rounds; B/A < 1: B is faster"
                 + (f"; {only_a} kernel(s) only in A, {only_b} only in B" if only_a or only_b else ""))
    return "\n".join(lines)
