"""Shared helpers for the CPU default schedule rules.

The rules run on kernels that no tuning record covers, so they must be cheap to
apply, never raise, and read the machine's SIMD width from the target rather
than from the host (cross-compiling to an AVX-512 box from an AVX2 box must
still produce 16-lane code).
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

# Storage scope for a tile's register accumulators. Not "local": on CPU,
# LowerTVMBuiltin keeps only *global*-scope allocations under 1 KiB on the
# stack (where LLVM promotes them to registers); every other one becomes a
# TVMBackendAllocWorkspace / FreeWorkspace call pair, inside the parallel loop,
# i.e. once per tile. For a small int8 tile that was 1/3 of the kernel's time.
ACC_SCOPE = "global"


def is_cpu_target(target: Target) -> bool:
    return target.kind.name == "llvm"


#: A target key that makes the rules and passes plan for 512-bit registers (16 fp32 lanes, 32
#: registers) whatever ``mcpu`` says. LLVM still emits code for ``mcpu`` (it splits the wide
#: vectors), so an AVX2 host can run, and check for parity, the AVX-512 tilings and weight
#: packings it could otherwise only compile (tests/targets/cpu-x86-avx2-plan512.json).
PLAN_512_KEY = "autoglm-plan-512"


def vector_bits(target: Target) -> int:
    """SIMD register width in bits, from the target's mcpu / features.

    ``tvm.target.codegen.llvm_get_vector_width`` answers 512 for every x86 CPU
    in TVM 0.27 (including znver3, which has no AVX-512), so ask LLVM about the
    feature flags instead.
    """
    from tvm.target import codegen

    if not is_cpu_target(target):
        return 128
    if PLAN_512_KEY in target.keys:
        return 512
    try:
        if codegen.llvm_cpu_has_features(["avx512f"], target):
            return 512
        if codegen.llvm_cpu_has_features(["avx"], target):
            return 256
    except Exception:  # pylint: disable=broad-except
        pass
    return 128


def num_vector_registers(target: Target) -> int:
    """32 zmm registers with AVX-512, 16 ymm/xmm otherwise (x86-64)."""
    return 32 if vector_bits(target) >= 512 else 16


def vector_lanes(target: Target, dtype: str) -> int:
    bits = tirx_dtype_bits(dtype)
    return max(vector_bits(target) // bits, 1)


def tirx_dtype_bits(dtype) -> int:
    import tvm

    return tvm.runtime.DataType(str(dtype)).bits


def num_cores(target: Target) -> int:
    attrs = target.attrs
    if "num-cores" in attrs:
        try:
            return max(int(attrs["num-cores"]), 1)
        except (TypeError, ValueError):
            pass
    import os

    return os.cpu_count() or 1


def const_extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    if isinstance(extent, tirx.IntImm):
        return int(extent.value)
    return None


def has_init(sch: s_tir.Schedule, block_rv) -> bool:
    """Whether the block has a ``T.init()`` (a reduction block, even if it has no reduction axis left)."""
    return sch.get(block_rv).init is not None


def inline_loses_init(sch: s_tir.Schedule, block_rv, reverse: bool) -> bool:
    """Whether inlining ``block_rv`` would touch a block with an init statement.

    ``normalize_prim_func`` drops unit loops, so a reduction whose reduction axes all have
    extent 1 (a depthwise 1x1 conv: one input channel per group, 1x1 window) keeps its
    ``T.init()`` but has no reduction axis: ``is_reduction()`` says False and TVM 0.27's
    ``reverse_compute_inline`` accepts it as a producer, then applies the consumer to both
    the init and the update (``max(max(0 + b, 0) + x*w + b, 0)`` for conv + bias + relu,
    a silently wrong answer). ``compute_inline`` of such a block would read the output
    before its init. Neither is allowed here.
    """
    if not reverse:
        return has_init(sch, block_rv)
    return any(has_init(sch, producer) for producer in sch.get_producers(block_rv))


def try_inline(sch: s_tir.Schedule, blocks: list[SBlockInfo], single_consumer: bool = False) -> list[SBlockInfo]:
    """Inline every block that can be inlined (producers first), keep the rest.

    Same idea as dlight's ``try_inline`` but never inlines a reduction block and
    keeps going until nothing changes. With ``single_consumer`` a producer read
    by several blocks is kept, so e.g. softmax's ``exp`` is computed once, not
    once per consumer.
    """
    remaining = list(blocks)

    def _trial(fn: Callable) -> int | None:
        for idx, info in enumerate(remaining):
            if info.is_reduction() or has_init(sch, info.block_rv):
                continue
            if single_consumer and fn == sch.compute_inline and len(sch.get_consumers(info.block_rv)) > 1:
                continue
            if inline_loses_init(sch, info.block_rv, reverse=fn == sch.reverse_compute_inline):
                continue
            try:
                fn(info.block_rv)
            except Exception:  # pylint: disable=broad-except
                continue
            return idx
        return None

    while True:
        idx = _trial(sch.compute_inline)
        if idx is None:
            idx = _trial(sch.reverse_compute_inline)
        if idx is None:
            break
        remaining.pop(idx)
    return remaining


def vectorize_innermost(sch: s_tir.Schedule, block, lanes: int, min_depth: int = 0) -> None:
    """Split the innermost loop of ``block`` by ``lanes`` and vectorize it.

    Extents not divisible by ``lanes`` are left to the split's predicate only
    when the extent is large; small odd extents are vectorized whole if short.
    """
    loops = sch.get_loops(block)
    if len(loops) <= min_depth:
        return  # only the shared outer loop(s): vectorizing them would be wrong
    inner = loops[-1]
    extent = const_extent(sch, inner)
    if extent is None:
        return
    if extent <= lanes:
        if extent >= 2:
            sch.vectorize(inner)
        return
    if extent % lanes == 0:
        _, vec = sch.split(inner, factors=[None, lanes])
        sch.vectorize(vec)
        return
    # Non-divisible: pick the largest divisor of the extent that is a power of 2
    # and >= 4, else leave it scalar (a predicate inside a vector loop blocks
    # LLVM's vectorizer).
    for cand in (lanes // 2, lanes // 4):
        if cand >= 4 and extent % cand == 0:
            _, vec = sch.split(inner, factors=[None, cand])
            sch.vectorize(vec)
            return


class EpilogueNotExact(Exception):
    """A fused epilogue's loop nest under its tile does not cover exactly that tile."""


def epilogue_covers_tile(sch: s_tir.Schedule, block, anchor, elems: int) -> bool:
    """True if ``block``'s loops below ``anchor`` have constant extents multiplying to ``elems``.

    ``reverse_compute_at`` of a layout epilogue (reshape + permute, e.g. the
    Q/K/V head split) relaxes the tile's column range through ``floordiv`` /
    ``floormod``; when the tile straddles a head boundary TVM 0.27 answers a
    wrong (non-covering) region: part of the tile is never written and the
    rest reads uninitialised accumulator -- NaN in bert-base. A correct region
    of a bijective epilogue has the tile's exact size, so anything else is
    rejected and the caller picks another tile (or leaves the epilogue unfused).
    """
    loops = sch.get_loops(block)
    target = sch.get(anchor)
    for pos, loop in enumerate(loops):
        if sch.get(loop).same_as(target):
            break
    else:
        return False
    product = 1
    for loop in loops[pos + 1 :]:
        extent = const_extent(sch, loop)
        if extent is None:
            return False
        product *= extent
    return product == elems


def fuse_and_parallel(sch: s_tir.Schedule, loops: list, target: Target, min_work: int = 1):
    """Fuse the given outer loops into one parallel loop; return it (or None)."""
    if not loops:
        return None
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = const_extent(sch, fused)
    if num_cores(target) > 1 and (extent is None or extent > 1):
        sch.parallel(fused)
    return fused


def min_parallel_tasks(target: Target) -> int:
    """Parallel tasks a kernel needs so every core gets several (load balance across uneven tasks)."""
    return 8 * num_cores(target)


def extent_product(sch: s_tir.Schedule, loops: list) -> int:
    """Product of the loops' constant extents (a symbolic extent counts as 1)."""
    total = 1
    for loop in loops:
        total *= const_extent(sch, loop) or 1
    return total


def parallelize_prefix(sch: s_tir.Schedule, loops: list, target: Target):
    """Fuse just enough leading loops for every core to get work, parallelize that.

    Fusing a whole nest turns each inner index into 64-bit div/mod per
    element (tens of cycles each); the rest of the nest stays as plain loops.
    Returns the parallel loop, or None.
    """
    if not loops:
        return None
    want = min_parallel_tasks(target)
    prefix, product = [], 1
    for loop in loops:
        prefix.append(loop)
        extent = const_extent(sch, loop)
        if extent is None:
            break
        product *= extent
        if product >= want:
            break
    fused = sch.fuse(*prefix) if len(prefix) > 1 else prefix[0]
    if num_cores(target) > 1:
        sch.parallel(fused)
    return fused


class CPURule(ScheduleRule):
    """A CPU rule: declines other targets and non-PrimFuncs, then calls ``_apply(func, target)``.

    A rule that raises is declined by ``schedule_func``, which catches it once for every rule.
    """

    def is_target_available(self, target: Target) -> bool:
        return is_cpu_target(target)

    def apply(self, func, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        return self._apply(func, target)

    def _apply(self, func, target: Target):  # pragma: no cover - abstract
        raise NotImplementedError
