"""Register tiles across a symbolic row extent (a dynamic build's ``seq``) without predicates.

Why: the Matmul rule's ``mr x width`` register tile needs a row count that ``mr`` divides.
Splitting a symbolic loop ``seq`` by ``mr`` puts ``T.where(r_o * mr + r_i < seq)`` on the
contraction block itself; with that predicate ``CompactBufferAllocation`` cannot shrink the
accumulator to the tile (it stays ``seq x width`` floats, in memory), and TVM 0.27's
``loop_partition`` refuses symbolic loops, so there is no full-tile/tail split either.

What this does instead (``sch.pad_einsum``): the contraction runs over
``ceildiv(seq, mr) * mr`` rows, a multiple of ``mr`` the analyzer can prove, so the tile split
is exact and the hot loop has no bounds check. The rows it adds read a zero-padded copy of the
activation (one ``seq x K`` copy, next to a ``seq x K x N`` contraction) and their results are
never stored: the write-back / fused epilogue keeps the original ``seq`` rows, so the only
predicate left is one row test per tile row in the epilogue, outside the vector loop. The
waste is at most ``mr - 1`` rows per call.

Anything this cannot prove it handles raises :class:`NotPadded`; the Matmul rule then builds
the schedule again without padding (the 1-row walk it used before).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from .contraction import Contraction, vars_in

#: The row count the tile is chosen for when the rows are symbolic: divisible by every
#: ``mr`` in 1..16, so any tile may be picked. pack_dense_weights uses the same number, so it
#: packs the weights into the panel width the rule then picks.
NOMINAL_ROWS = 720720


class NotPadded(Exception):
    """The symbolic row axis could not be padded to a multiple of the tile."""


def row_axis(block, ana: Contraction, extents: list) -> int | None:
    """The symbolic spatial axis only the broadcast-side operand reads (the rows to tile), or None.

    With several, the innermost (the contiguous rows of ``x[b, seq, K]``) is taken; the others
    stay outer loops.
    """
    if ana.vec_load is None or ana.other_load is None:
        return None
    vec_side = vars_in(ana.vec_load.indices)
    other_side = vars_in(ana.other_load.indices)
    found = [
        i for i in ana.spatial
        if i != ana.vec and extents[i] is None
        and block.iter_vars[i].var in other_side and block.iter_vars[i].var not in vec_side
    ]
    return found[-1] if found else None


def pad_rows(sch: s_tir.Schedule, block_rv, axis: int, mr: int, consumers: list):
    """Pad ``block_rv``'s iterator ``axis`` to a multiple of ``mr``; return (main info, consumers).

    ``consumers``: the block's epilogue (at most one, an ``SBlockInfo``). pad_einsum adds a
    copy-back block; with an epilogue it is inlined into it, without one it becomes the
    epilogue. Raises :class:`NotPadded` if TVM refuses any step (the schedule is then spoilt:
    the caller starts over).
    """
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    name = sch.get(block_rv).name_hint
    n_iters = len(sch.get(block_rv).iter_vars)
    padding = [1] * n_iters
    padding[axis] = mr
    epilogue_name = sch.get(consumers[0].block_rv).name_hint if consumers else None
    try:
        sch.pad_einsum(block_rv, padding)
        copies = sch.get_consumers(block_rv)
        if len(copies) != 1:
            raise NotPadded(f"{name}: {len(copies)} consumers after padding")
        if epilogue_name is not None:
            sch.compute_inline(copies[0])
    except NotPadded:
        raise
    except Exception as exc:  # pylint: disable=broad-except  (TVM's ScheduleError: any refusal)
        raise NotPadded(f"{name}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
    infos = normalize_prim_func(sch)
    if infos is None:
        raise NotPadded(f"{name}: not normalizable after padding")
    by_name = {sch.get(info.block_rv).name_hint: info for info in infos}
    main = by_name.get(name)
    if main is None or len(sch.get_loops(main.block_rv)) != n_iters:
        raise NotPadded(f"{name}: block changed shape after padding")
    after = infos[infos.index(main) + 1 :]
    if len(after) != 1:
        raise NotPadded(f"{name}: {len(after)} blocks after the contraction")
    return main, after


def padded_producers(sch: s_tir.Schedule, main_rv) -> list:
    """The zero-padding copies ``pad_einsum`` put in front of the contraction."""
    from .contraction import is_pad

    return [p for p in sch.get_producers(main_rv) if is_pad(sch.get(p))]


def is_exact_multiple(extent, mr: int) -> bool:
    """Whether the analyzer proves ``extent % mr == 0`` (the tile split then has no predicate)."""
    from tvm.sym.analyzer import Analyzer

    return bool(Analyzer().can_prove(tirx.floormod(extent, mr) == 0))
