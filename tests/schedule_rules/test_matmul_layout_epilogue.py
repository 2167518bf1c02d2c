"""Matmul rule with a layout epilogue (bias + reshape to heads + permute): no NaN, parity with numpy.

Regression for bert-base at O2: the Q/K/V projection kernel (matmul
[128,768]x[768,768] + bias -> reshape (1,128,12,64) -> permute (0,2,1,3)) got
the 4x3-vector tile (24 columns), which straddles the 64-wide heads, and
``reverse_compute_at`` of the layout epilogue then covered a wrong column
range: part of the output was never written, the rest read uninitialised
accumulator (512 NaNs). The rule now only fuses such an epilogue into a tile
it covers exactly (C.epilogue_covers_tile), else picks the next tile.

Tolerance: rtol=1e-4, atol=1e-4 against a float64 numpy reference (K=768 sums
in float32).
"""

import numpy as np
import pytest

from tvm import relax

from tvm_autoglm.schedule_rules import Matmul, apply_default_schedules
from tvm_autoglm.schedule_rules import _common as C

from tvm_autoglm.passes.fuse_epilogue import fuse_epilogue

import sched_helpers
from sched_helpers import assert_parallel_vectorized, prim_funcs, run

RTOL = ATOL = 1e-4


def build_fused(make_body, inputs):
    """sched_helpers.build_fused with the O2 fuse_epilogue grouping (reshape/permute join the matmul)."""
    return sched_helpers.build_fused(make_body, inputs, before_fusion=fuse_epilogue())


def _heads_model(batch, m, k, n, head_dim, perm):
    rng = np.random.default_rng(n + k + m)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype("float32")
    b = rng.standard_normal(n).astype("float32")
    heads = n // head_dim

    def body(x):
        y = relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(b))
        if perm is None:
            return y
        return relax.op.permute_dims(relax.op.reshape(y, (batch, m, heads, head_dim)), perm)

    mod = build_fused(body, {"x": (batch, m, k)})
    x = rng.standard_normal((batch, m, k)).astype("float32")
    ref = x.astype("float64") @ w + b
    if perm is not None:
        ref = ref.reshape(batch, m, heads, head_dim).transpose(perm)
    return mod, x, ref.astype("float32")


def _check(target, mod, x, ref):
    scheduled = apply_default_schedules(mod, target)
    matmuls = [f for name, f in prim_funcs(scheduled).items() if "matmul" in name]
    assert len(prim_funcs(scheduled)) == 1 and matmuls, prim_funcs(scheduled).keys()
    for func in matmuls:
        assert_parallel_vectorized(func)
    got = run(scheduled, target, [x])
    assert not np.isnan(got).any(), f"{int(np.isnan(got).sum())} NaN in {got.size}"
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "batch,m,k,n,head_dim,perm",
    [
        (1, 128, 768, 768, 64, (0, 2, 1, 3)),  # bert-base Q/V projection (the NaN kernel)
        (1, 128, 768, 768, 64, (0, 2, 3, 1)),  # K projection transposed for Q @ K^T
        (2, 128, 768, 768, 64, (0, 2, 1, 3)),
        (1, 8, 16, 192, 64, (0, 2, 1, 3)),  # smallest shape with the 24-column tile across a head
        (1, 16, 32, 96, 32, (0, 2, 1, 3)),
    ],
)
def test_layout_epilogue_parity(target, batch, m, k, n, head_dim, perm):
    _check(target, *_heads_model(batch, m, k, n, head_dim, perm))


@pytest.mark.parametrize("batch,k,n", [(1, 768, 3072), (1, 3072, 768), (2, 768, 3072), (2, 3072, 768)])
def test_ffn_shapes_without_layout_epilogue(target, batch, k, n):
    _check(target, *_heads_model(batch, 128, k, n, 64, None))


def test_straddling_tile_is_rejected(target):
    """The 24-column tile is the rule's first choice here, yet the final schedule must not use it."""
    mod, _, _ = _heads_model(1, 8, 16, 192, 64, (0, 2, 1, 3))
    (func,) = [f for name, f in prim_funcs(mod).items() if "matmul" in name]
    rule = Matmul()
    with pytest.raises(C.EpilogueNotExact):
        rule._schedule(func, target, 0, fuse_epilogue=True)
    assert rule.apply(func, target, False) is not None
