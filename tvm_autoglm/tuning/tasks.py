"""Which kernels to tune and how much each matters.

MetaSchedule extracts one task per distinct kernel (workload), weighted by how
many times ``main`` calls it. We rank tasks by estimated cost = calls x FLOPs
and skip the negligible tail: tuning a 0.1 % kernel costs the same trials as a
40 % GEMM and cannot move end-to-end latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm

from ..ir_utils import copy_module, is_scheduled


@dataclass
class Task:
    name: str
    weight: int
    flops: float
    share: float  # of total estimated cost (weight x flops)
    extracted: object  # ms ExtractedTask

    @property
    def mod(self):
        return self.extracted.dispatched[0]


def _born_scheduled(extracted) -> bool:
    """A kernel whose PrimFunc already carries ``tirx.is_scheduled`` (MetaSchedule's task keeps it)."""
    return any(is_scheduled(f) for m in (extracted.mod, *extracted.dispatched) for f in m.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def extract(mod, tvm_target, min_share: float = 0.005) -> tuple[list[Task], list[Task]]:
    """(tasks to tune, skipped tasks) from a fused Relax module; the input is not modified."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    extracted = ms.relax_integration.extract_tasks(copy_module(mod), tvm_target, module_equality="structural")
    tasks = []
    for t in extracted:
        if t.mod.attrs is not None and t.mod.attrs.get("tirx.is_scheduled", False):
            continue
        if _born_scheduled(t):  # e.g. the LSTM/GRU/RNN recurrence (frontend/rnn_kernel.py): nothing to tune
            continue
        try:
            flops = float(estimate_tir_flops(t.dispatched[0]))
        except Exception:  # noqa: BLE001 - a kernel the estimator cannot read counts as cheap
            flops = 0.0
        tasks.append(Task(t.task_name, int(t.weight), max(flops, 1.0), 0.0, t))
    total = sum(t.weight * t.flops for t in tasks) or 1.0
    for t in tasks:
        t.share = t.weight * t.flops / total
    tasks.sort(key=lambda t: -t.share)
    keep = [t for t in tasks if t.share >= min_share]
    skip = [t for t in tasks if t.share < min_share]
    return keep, skip


def top_tasks(tasks: list[Task], count: int | None, min_share: float = 0.0) -> tuple[list[Task], list[Task]]:
    """(the ``count`` costliest tasks with at least ``min_share``, the rest), costliest first.

    Why: on a lent GPU the search has minutes, not hours; spreading them over every
    kernel measures each a few times and improves none. The few GEMMs that hold most of
    bert-large's estimated cost get them all. ``count=None`` keeps every task over the share.
    """
    if count is not None and count < 1:
        raise ValueError(f"top_tasks: count must be >= 1 (got {count})")
    ranked = sorted(tasks, key=lambda t: (-t.share, t.name))
    eligible = [t for t in ranked if t.share >= min_share]
    chosen = eligible if count is None else eligible[:count]
    names = {id(t) for t in chosen}
    return chosen, [t for t in ranked if id(t) not in names]
