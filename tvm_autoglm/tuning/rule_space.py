"""A MetaSchedule design space built from our Matmul rule, with decisions the search can change.

Why: MetaSchedule's generic CPU space (multi-level tiling) does not contain the
default rule's schedule (register tile + packed panel + fused epilogue), and on
bert-base 424 trials in it never beat that schedule. The baseline record puts the
default schedule in the database, but its trace samples nothing, so no mutator can
move it: it enters the population and seeds nothing. This space makes the rule's
fixed choices into decisions, with the rule's own schedule as the default point:

* ``tile``: which register tile of :func:`~tvm_autoglm.schedule_rules.matmul.tile_candidates`
  (best first, the rule's pick is the default);
* ``k_block``: no split (default) or walking the reduction axis in chunks of 64..512,
  all row tiles per chunk (cache blocking of a deep panel, e.g. bert's 3072-deep FFN2);
* ``pack``: copy the vector-side panel into a contiguous buffer (default) or not.

How the search moves: each decision is a ``sample_categorical`` in the trace, but the
rule computes from the chosen value in Python (tile sizes, the packed layout, whether
the epilogue fuses), and a trace replays the *literal* schedule that followed. So the
generic mutators (MutateTileSize only mutates ``sample_perfect_tile``, MutateUnroll only
categoricals feeding an unroll annotation; no default llvm mutator touches other
categoricals) could not move it even if they tried. :class:`MutateRuleDecision` instead
changes one decision and re-runs the rule with the new decisions, returning that
trace. A decision is recorded as a one-candidate categorical (``candidates=[value]``),
so replaying a trace with fresh random decisions (the evolutionary search's initial
population) can never make the recorded decisions disagree with the schedule.
The baseline record (no sampling at all) is read as "all defaults", so mutation starts
from the rule's schedule, which is what the baseline was meant to seed.
"""

from __future__ import annotations

import random

DECISIONS = ("tile", "k_block", "pack")


class _Choices:
    """Answers ``Matmul._schedule``'s picks: forced values by position, else the defaults.

    Records every pick of the last attempt (the rule may restart on a fresh schedule
    when an epilogue does not fuse) and, with ``emit``, writes it into the trace.
    """

    def __init__(self, forced=None, emit: bool = True):
        self.forced = list(forced) if forced is not None else None
        self.emit = emit
        self.picks: list[tuple[str, int, int]] = []  # (name, options, value)
        self._sch = None

    def pick(self, sch, name: str, n: int, default: int) -> int:
        if sch is not self._sch:  # a new attempt starts from scratch
            self._sch, self.picks = sch, []
        pos = len(self.picks)
        value = default
        if self.forced is not None and pos < len(self.forced):
            value = self.forced[pos]
        value = max(0, min(int(value), n - 1))
        self.picks.append((name, n, value))
        if self.emit:
            sch.sample_categorical(candidates=[value], probs=[1.0], decision=0)
        return value


def _matmul():
    from ..schedule_rules import Matmul

    return Matmul()


def default_point(mod, target):
    """(Schedule, picks) of the rule's own schedule with its decisions in the trace, or None.

    None unless the default rules give this kernel to the Matmul rule and the
    schedule has at least one decision (conv's pixel-tiled path has none).
    """
    from ..schedule_rules import default_schedule

    func = mod["main"]
    _, rule = default_schedule(func, target)
    if rule != "Matmul":
        return None
    choices = _Choices()
    try:
        sch = _matmul()._apply(func, target, choices)
    except Exception:  # noqa: BLE001 - a rule failure means "not in this space"
        return None
    if sch is None or not choices.picks:
        return None
    return sch, choices.picks


def build_point(mod, target, decisions):
    """(Schedule, picks) of the rule's schedule with ``decisions`` forced (by position), or None."""
    choices = _Choices(forced=decisions)
    try:
        sch = _matmul().schedule_with(mod["main"], target, choices)
    except Exception:  # noqa: BLE001
        return None
    if sch is None or not choices.picks:
        return None
    return sch, choices.picks


def read_decisions(trace):
    """Our decisions in ``trace`` (values, by position); [] for a trace without sampling;
    None for a trace from another design space."""
    values = []
    for inst in trace.insts:
        kind = inst.kind.name
        if kind == "SampleCategorical":
            cands = inst.attrs[0]
            if len(cands) != 1:  # generic space's unroll choice etc.
                return None
            values.append(int(cands[0]))
        elif kind.startswith("Sample"):
            return None
    return values


def neighbours(mod, target, picks):
    """Schedules one decision away from ``picks`` (each option of each decision in turn)."""
    out = []
    values = [v for _, _, v in picks]
    for pos, (_, n, value) in enumerate(picks):
        for option in range(n):
            if option == value:
                continue
            built = build_point(mod, target, values[:pos] + [option] + values[pos + 1 :])
            if built is not None:
                out.append(built[0])
    return out


def rule_space(target):
    """The design-space generator: for a kernel the Matmul rule takes, the rule's schedule
    first, then every point one decision away; nothing for other kernels.

    The neighbours are spaces of their own because the evolutionary search's initial
    population is drawn from the design spaces (uniformly over them) plus the database's
    best records: with the default point alone, its replay is the baseline already
    measured, and a 16-trial run on the tiny model measured no point of this space.
    """
    from tvm.s_tir import meta_schedule as ms

    def fn(sch):
        point = default_point(sch.mod, target)
        if point is None:
            return []
        return [point[0]] + neighbours(sch.mod, target, point[1])

    return ms.space_generator.ScheduleFn(fn, sch_rules=[], postprocs=[], mutator_probs={})


def make_mutator():
    """The mutator of :mod:`rule_space` decisions (a fresh PyMutator instance)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class MutateRuleDecision(ms.mutator.PyMutator):
        """Changes one decision of a rule-space trace (or of the baseline) and re-runs the rule."""

        def __init__(self, cache=None):
            super().__init__()
            self.mod = None
            self.target = None
            self.calls = 0
            self.cache = cache if cache is not None else {}  # decisions tuple -> (trace, picks) or None

        def _initialize_with_tune_context(self, context) -> None:
            # Inert on kernels outside the space (their baselines come from other rules).
            inside = context.mod is not None and default_point(context.mod, context.target) is not None
            self.mod = context.mod if inside else None
            self.target = context.target
            self.cache = {}

        def _point(self, decisions):
            key = tuple(decisions)
            if key not in self.cache:
                built = build_point(self.mod, self.target, decisions)
                self.cache[key] = None if built is None else (built[0].trace, built[1])
            return self.cache[key]

        def apply(self, trace, rand_state):
            if self.mod is None:
                return None
            values = read_decisions(trace)
            if values is None:
                return None
            current = self._point(values)  # [] = the baseline: the rule's defaults
            if current is None:
                return None
            picks = current[1]
            self.calls += 1
            rng = random.Random((int(rand_state) * 1000003 + self.calls) & 0xFFFFFFFF)
            movable = [i for i, (_, n, _) in enumerate(picks) if n > 1]
            if not movable:
                return None
            pos = rng.choice(movable)
            _, n, value = picks[pos]
            new = [v for _, _, v in picks]
            new[pos] = rng.choice([v for v in range(n) if v != value])
            child = self._point(new)
            return None if child is None else child[0]

        def clone(self):
            twin = MutateRuleDecision(dict(self.cache))
            twin.mod, twin.target, twin.calls = self.mod, self.target, self.calls
            return twin

    return MutateRuleDecision()


def union_space(target, mutator_weight: float = 1.0):
    """MetaSchedule's generic space plus :func:`rule_space`, with the rule mutator added
    to the default llvm mutators (``mutator_weight`` relative to their total of 1)."""
    from tvm.s_tir import meta_schedule as ms

    probs = dict(ms.mutator.Mutator.create("llvm"))
    probs[make_mutator()] = float(mutator_weight)
    return ms.space_generator.SpaceGeneratorUnion(
        [ms.space_generator.PostOrderApply(), rule_space(target)],
        sch_rules="from-target",
        postprocs="from-target",
        mutator_probs=probs,
    )
