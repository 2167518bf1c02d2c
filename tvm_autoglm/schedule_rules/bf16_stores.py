"""Keep bfloat16 constant stores out of vector loops (a TVM 0.27 lowering bug).

``BF16StorageLegalize`` turns bfloat16 buffers into uint16 ones and rewrites
every bfloat16 value stored into them, except a *vector constant*: a
vectorized loop storing ``T.bfloat16(c)`` (a reduction's init, e.g. max
pooling's ``-inf`` or a sum's ``0``) reaches it as ``Broadcast(bf16 c, n)`` and
fails with "dtype mismatch on BufferStore: buffer's dtype is T.uint16 ...
RHS's dtype is T.bfloat16xN". Vectorized bf16 stores of computed values lower
fine, so only the loops whose stores are all constants lose ``vectorized``:
they run once per output tile, before the reduction, and cost next to
nothing scalar. ``--quantize bf16`` hit this as soon as a pooling kernel ran
in bf16.
"""

from __future__ import annotations

import tvm_ffi
from tvm import tirx


def _bf16_constant_store(store: tirx.BufferStore) -> bool:
    value = store.value
    while isinstance(value, tirx.Cast):
        value = value.value
    return str(store.buffer.dtype) == "bfloat16" and isinstance(value, (tirx.FloatImm, tirx.IntImm))


def _constant_bf16_stores_only(loop: tirx.For) -> bool:
    """Whether the loop body stores something, and every store is a bf16 constant."""
    stores: list[tirx.BufferStore] = []
    tvm_ffi.structural_walk(loop.body, (tirx.BufferStore, stores.append), order="post")
    return bool(stores) and all(_bf16_constant_store(s) for s in stores)


def serialize_bf16_constant_stores(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with each vectorized loop that only stores bf16 constants made serial (else ``func`` itself)."""
    changed = []

    def visit(loop: tirx.For):
        if loop.kind != tirx.ForKind.VECTORIZED or not _constant_bf16_stores_only(loop):
            return loop
        changed.append(loop)
        return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body, loop.thread_binding, loop.annotations, loop.step)

    body = tvm_ffi.structural_map(func.body, (tirx.For, visit))
    return func.with_body(body) if changed else func
