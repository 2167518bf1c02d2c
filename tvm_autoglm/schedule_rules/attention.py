"""A CPU default schedule for the fused attention kernel (``fuse_attention``).

The fused kernel holds two matmuls, softmax's reductions and the elementwise
glue, so none of the single-pattern CPU rules in ``tvm_autoglm.schedule_rules``
claim it, and untuned it would run as a scalar single-threaded loop nest.

The main schedule (``_rowwise``) is flash-attention's loop order without the
online softmax: one parallel task per (batch x head x block of query rows);
inside a task the score rows, their max, exp, sum and normalised
probabilities live in a small task-local buffer (compacted to rows x keys), and
the P.V product is accumulated in registers and written straight into the
merged-heads output. Why this shape:

* the first version scheduled block by block (one parallel loop per block,
  full S x S intermediates) and computed ``exp / sum`` (plus the NaN guard)
  inside P.V's reduction, once per output *element* (x head dim): untuned O2
  was ~20% slower than O1's three separate kernels on tiny transformers;
* the probabilities are normalised once per score, vectorized over the keys;
* both matmuls keep a ``rows x vectors`` accumulator tile in registers, like
  the Matmul rule's micro-kernel: Q.K^T is vectorized over the keys when K^T
  is contiguous along them (both torch exporters emit it that way), P.V over
  the head dim;
* max and sum are rfactored over vector lanes (a scalar max/sum chain over
  the keys costs about as much as the Q.K^T row);
* ``exp`` becomes a vectorizable polynomial (``vector_exp``, Cephes' expf:
  max relative error 7.5e-8, about 1 ulp; NaN passes through so the SDPA NaN
  guard still sees it): LLVM lowers a vector ``llvm.exp`` to one libm call
  per lane, and with it the softmax's exps were ~60% of the kernel (and of
  O1's separate softmax kernel), at tiny sizes more than both matmuls.

Kernels whose structure differs (not matmul, max, sum, matmul in that order)
get the old per-block schedule (``_per_block``).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir.expr import Call
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from . import _common as C
from .elementwise import schedule_spatial_block
from .reduction import Reduction

# accumulator vectors per register tile (16 ymm on AVX2: leave room for the
# broadcast operand and the loaded vector)
_TILE_VECTORS = 12


def _matmul_like(sch, block) -> bool:
    """A multiply-accumulate reading two buffers (Q.K^T, P.V), not a max/sum."""
    stmt = sch.get(block)
    return len(stmt.reads) >= 2 and isinstance(stmt.body, tirx.BufferStore) and isinstance(stmt.body.value, tirx.Add)


class AttentionCPU(ScheduleRule):
    """Multi-block kernels (matmul + softmax + matmul)."""

    def __init__(self, rows: int | None = None):
        self.rows = rows  # query rows per task; None: chosen from the shapes

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        for schedule in (self._rowwise, _per_block):
            try:
                sch = schedule(func, target)
            except Exception:  # pylint: disable=broad-except  # a rule bug must not break the build
                sch = None
            if sch is not None:
                return sch
        return None

    def _rowwise(self, func, target):
        sch = s_tir.Schedule(vector_exp(func))
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        blocks = [b.block_rv for b in infos]
        red = [i for i, b in enumerate(infos) if b.is_reduction()]
        if len(red) != 4:
            return None
        iqk, imax, isum, ipv = red
        if not (_matmul_like(sch, blocks[iqk]) and _matmul_like(sch, blocks[ipv])):
            return None
        if _matmul_like(sch, blocks[imax]) or _matmul_like(sch, blocks[isum]):
            return None
        pv_kind = infos[ipv].dom_kind()
        if pv_kind != "S" * (len(pv_kind) - 1) + "R" or len(pv_kind) < 3:
            return None
        names = [sch.get(b).name_hint for b in blocks]

        def get(i):
            return sch.get_sblock(names[i])

        # inline the glue: Q/K scaling into Q.K^T, scale/mask into max and exp,
        # the normalisation chain into its last block (the one P.V reads),
        # the head merge into its last block; keep exp (read by sum and norm)
        keep = {iqk, imax, isum, ipv, imax + 1 if imax + 1 < isum else None, ipv - 1, len(blocks) - 1}
        if ipv - 1 <= isum:
            return None
        for i in range(len(blocks)):
            if i not in keep:
                sch.compute_inline(get(i))
        exp_i, norm_i, tail_i = imax + 1, ipv - 1, len(blocks) - 1
        if exp_i == isum:
            return None

        lanes = C.vector_lanes(target, "float32")
        # rfactor first: it wants the reduction to be alone under its loops
        rf_names = {}
        for i in (imax, isum):
            rf_names[i] = _rfactor(sch, get(i), lanes)
        pv = get(ipv)
        loops = sch.get_loops(pv)
        *batch, row, dim, red_k = loops
        n_rows = C.const_extent(sch, row)
        head_dim = C.const_extent(sch, dim)
        if n_rows is None or head_dim is None:
            return None
        rows = self.rows or _choose_rows(n_rows, head_dim, lanes, C.extent_product(sch, batch), C.num_cores(target))
        ro, ri = sch.split(row, factors=[None, rows])
        sch.reorder(ro, red_k, ri, dim)
        task = sch.fuse(*batch, ro) if batch else ro
        if C.num_cores(target) > 1:
            sch.parallel(task)
        # producers into the task, last first
        order = [norm_i, isum, rf_names[isum], exp_i, imax, rf_names[imax], iqk]
        for i in order:
            if i is not None:
                sch.compute_at(sch.get_sblock(i) if isinstance(i, str) else get(i), task, preserve_unit_loops=True)
        if tail_i != ipv:
            try:
                sch.reverse_compute_at(get(tail_i), task, preserve_unit_loops=True)
            except Exception:  # pylint: disable=broad-except  # stays a separate parallel loop
                schedule_spatial_block(sch, get(tail_i), target)
            else:
                C.vectorize_innermost(sch, get(tail_i), lanes, min_depth=1)

        _register_tile(sch, get(ipv), lanes)
        _qk_tile(sch, get(iqk), lanes)
        for i in (exp_i, norm_i):
            C.vectorize_innermost(sch, get(i), lanes, min_depth=1)
        for name in rf_names.values():
            if name is not None:
                _vectorize_rf(sch, sch.get_sblock(name), lanes)
        return sch


def _fast_exp_f32(x):
    """Cephes expf: x = n ln2 + r, |r| <= ln2/2; exp(r) by a degree-7 polynomial; 2^n from the exponent bits."""

    def c(value):
        return tirx.const(value, "float32")

    xc = tirx.max(tirx.min(x, c(88.3762626647950)), c(-88.3762626647949))
    fx = tirx.floor(xc * c(1.44269504088896341) + c(0.5))
    r = xc - fx * c(0.693359375) - fx * c(-2.12194440e-4)  # ln2 split in two for an exact product
    p = c(1.9875691500e-4)
    for coef in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + c(coef)
    y = p * (r * r) + r + c(1.0)
    # n = -127 (x <= -88.03, exp underflows) gives exponent bits 0: the result is 0
    pow2n = tirx.reinterpret("float32", tirx.shift_left(tirx.Cast("int32", fx) + tirx.const(127, "int32"), tirx.const(23, "int32")))
    return tirx.Select(tirx.isnan(x), x, y * pow2n)


_EXP = tvm.ir.Op.get("tirx.exp")


def vector_exp(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Every float32 ``exp`` in ``func`` as the polynomial above (vectorizes; libm's does not)."""

    def rewrite(call):
        if call.op.same_as(_EXP) and str(call.ty) == "float32":
            return _fast_exp_f32(call.args[0])
        return call

    return tvm_ffi.structural_map(func, [(Call, rewrite)])


def _choose_rows(n_rows: int, head_dim: int, lanes: int, batch: int, cores: int) -> int:
    """Most query rows per task whose P.V accumulator tile fits the registers,
    while leaving every core several tasks."""
    vecs = max(1, -(-head_dim // lanes))
    best = 1
    for cand in (2, 4, 8):
        if n_rows % cand or cand * vecs > _TILE_VECTORS:
            continue
        if batch * (n_rows // cand) < 4 * cores:
            continue
        best = cand
    return best


def _register_tile(sch, block, lanes):
    """P.V inside a task: loops (k, rows, d) -> accumulators rows x d/lanes in registers."""
    loops = sch.get_loops(block)
    k, ri, d = loops[-3], loops[-2], loops[-1]
    extent = C.const_extent(sch, d)
    if extent is None or extent % lanes:
        return
    do, di = sch.split(d, factors=[None, lanes])
    sch.vectorize(di)
    sch.unroll(do)
    sch.unroll(ri)
    init = sch.decompose_reduction(block, k)
    C.vectorize_innermost(sch, init, lanes, min_depth=1)


def _qk_tile(sch, block, lanes):
    """Q.K^T inside a task: loops (rows, j, d) -> (j_outer, d, rows, j_vectors, lanes)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    ri, j, d = loops[-3], loops[-2], loops[-1]
    j_var = stmt.iter_vars[-2].var
    # vectorize over the keys only if the K^T operand is contiguous along them
    k_side = [r for r in stmt.reads if len(r.region) and _last_index_is(r, j_var)]
    n_keys = C.const_extent(sch, j)
    n_rows = C.const_extent(sch, ri) or 1
    if not k_side or n_keys is None or n_keys % lanes:
        return
    vecs = max(1, _TILE_VECTORS // n_rows)
    while vecs > 1 and (n_keys // lanes) % vecs:
        vecs -= 1
    jo, jv, jl = sch.split(j, factors=[None, vecs, lanes])
    sch.reorder(jo, d, ri, jv, jl)
    sch.vectorize(jl)
    sch.unroll(jv)
    sch.unroll(ri)
    init = sch.decompose_reduction(block, d)
    C.vectorize_innermost(sch, init, lanes, min_depth=1)


def _last_index_is(region, var) -> bool:
    last = region.region[-1].min
    return isinstance(last, tirx.Var) and last.same_as(var)


def _rfactor(sch, block, lanes) -> str | None:
    """Row max/sum over the keys: partial results per vector lane, then a short
    scalar fold. Returns the rfactor block's name, None where it stays scalar."""
    try:
        rf = Reduction._rfactor(sch, block, lanes)
    except Exception:  # pylint: disable=broad-except  # stays a scalar reduction
        rf = None
    if rf is None:
        return None
    return sch.get(rf).name_hint


def _vectorize_rf(sch, rf, lanes) -> None:
    Reduction._vectorize_rf(sch, rf, lanes)


def _per_block(func, target):
    """Fallback: every remaining block gets its own parallel loop (first version)."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None or sum(1 for b in infos if b.is_reduction()) < 2:
        return None
    infos = C.try_inline(sch, infos, single_consumer=True)
    for info in infos:
        if info.is_reduction():
            loops = sch.get_loops(info.block_rv)
            kinds = info.dom_kind()
            lead = []
            for loop, kind in zip(loops, kinds):
                if kind != "S":
                    break
                lead.append(loop)
            if kinds == "S" * (len(kinds) - 1) + "R" and len(loops) >= 3 and _matmul_like(sch, info.block_rv):
                # s.., j, k -> s.., k, j: the innermost loop walks the
                # contiguous last axis of the RHS and the output, so it vectorizes
                if len(lead) > 1:
                    C.parallelize_prefix(sch, lead[:-1], target)
                loops = sch.get_loops(info.block_rv)
                j, k = loops[-2], loops[-1]
                sch.reorder(k, j)
                lanes = C.vector_lanes(target, "float32")
                extent = C.const_extent(sch, j)
                if extent is not None and extent % lanes == 0:
                    _, vec = sch.split(j, factors=[None, lanes])
                    try:
                        sch.vectorize(vec)
                    except Exception:  # pylint: disable=broad-except  # stays a plain (reordered) loop
                        pass
            elif lead:
                C.parallelize_prefix(sch, lead, target)
        else:
            schedule_spatial_block(sch, info.block_rv, target)
    return sch
