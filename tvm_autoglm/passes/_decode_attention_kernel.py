"""The decode-step attention kernel: one query row per head over the *valid prefix* of a KV cache.

Why a hand-written kernel: the imported graph computes ``softmax(Q . K^T + mask) . V`` over
every slot of the preallocated cache (``max_context``), and its ``K^T`` is a transposed copy
of the whole key cache made every step. This kernel instead

* reads the number of valid slots at run time, ``n = cache_position + 1``, from the same
  ``cache_position`` buffer the cache write uses, and loops over keys ``0..n`` only: a
  generator compiled for 2048 slots pays for the tokens it holds, not for 2048;
* reads the key and value caches in place, ``[1, kv_heads, slots, head_dim]`` row-major:
  ``Q . K^T`` is a dot product along each cached key row (no transpose, no copy), and a
  grouped-query head ``h`` reads kv head ``h // (heads // kv_heads)`` (no repeated cache);
* applies the model's own additive mask(s) to every slot it reads, so an attention mask that
  hides earlier slots still hides them. Slots ``>= n`` are the ones a cache of ``n`` tokens
  does not have (onnxruntime's cache loop, the reference, has exactly ``n`` slots).

Numerics follow the graph's ops in order: ``q op c`` / ``k op c`` scalings, the score
scalings, the mask additions, ``exp(s - max) / sum`` and the optional ``isnan -> fill`` guard.
``exp`` is the vectorizable polynomial of the fused-attention rule (about 1 ulp).

Schedule (written in, marked ``tirx.is_scheduled``): one parallel task per query head; scores
in a per-task row of ``slots`` floats; the dot products accumulate ``lanes`` partial sums
along the head dim; max and sum use ``lanes`` partials over the keys (the row is padded to
whole vectors with -inf, which exps to 0); P.V accumulates the head-dim row in registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

#: ``autoglm.kernel`` attribute of the kernel (tests and the manifest find it by this name).
KERNEL_NAME = "decode_attention"


@dataclass(frozen=True)
class DecodeAttention:
    """What one attention core computes, read off the fused attention group (see passes/decode_attention)."""

    heads: int
    kv_heads: int
    slots: int
    head_dim: int
    q_scale: tuple = ()  # (("mul"|"div", value), ...) applied to q in order
    k_scale: tuple = ()  # the same for each key element
    score_scale: tuple = ()  # the same for each score, after the dot product
    bias_heads: tuple = ()  # per additive mask: 1 (broadcast over heads) or heads
    nan_fill: float | None = None  # where(isnan(p), fill, p) after the softmax, if the graph has it
    dtype: str = "float32"
    lanes: int = field(default=8, compare=False)


def _apply(value, ops):
    for op, c in ops:
        const = tirx.const(c, "float32")
        value = value * const if op == "mul" else value / const
    return value


def decode_attention_kernel(spec: DecodeAttention) -> tirx.PrimFunc:
    """``out[0, h, 0, :] = softmax_j(scale(q[h] . scale(k[h // rep, j])) + masks[j]) . v[h // rep, j]`` for j < n."""
    from ..schedule_rules.attention import _fast_exp_f32

    H, KV, S, D, f32 = spec.heads, spec.kv_heads, spec.slots, spec.head_dim, spec.dtype
    rep = H // KV
    L = spec.lanes
    dl = next(w for w in (L, 8, 4, 2, 1) if D % w == 0)  # partial sums along the head dim (40: 8 lanes)
    s_pad = -(-S // L) * L
    neg_inf = tirx.const(float("-inf"), f32)
    zero = tirx.const(0.0, f32)
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name(KERNEL_NAME)
            q = T.arg("q", T.buffer((1, H, 1, D), f32))
            k = T.arg("k_cache", T.buffer((1, KV, S, D), f32))
            v = T.arg("v_cache", T.buffer((1, KV, S, D), f32))
            biases = [T.arg(f"mask{i}", T.buffer((1, bh, 1, S), f32)) for i, bh in enumerate(spec.bias_heads)]
            pos = T.arg("cache_position", T.buffer((1,), "int64"))
            out = T.arg("out", T.buffer((1, H, 1, D), f32))
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8, "autoglm.kernel": KERNEL_NAME})
            # the valid prefix: slots 0..cache_position (clamped to the cache; the host range-checks it too)
            n = T.Bind(tirx.max(tirx.min(tirx.Cast("int32", pos[0]) + 1, S), 1))
            n_vec = T.Bind((n + (L - 1)) // L)
            with T.parallel(0, H) as h:
                g = h // rep
                score = T.alloc_buffer((s_pad,), f32)
                qs = T.alloc_buffer((D,), f32)
                part = T.alloc_buffer((L,), f32)
                acc = T.alloc_buffer((D,), f32)
                red = T.alloc_buffer((2,), f32)  # [max, sum]
                with T.vectorized(0, D) as d:
                    T.buffer_store(qs, _apply(q[0, h, 0, d], spec.q_scale), [d])
                with T.serial(0, n) as j:
                    with T.vectorized(0, dl) as l:
                        T.buffer_store(part, zero, [l])
                    with T.serial(0, D // dl) as do:
                        with T.vectorized(0, dl) as l:
                            d = do * dl + l
                            T.buffer_store(part, part[l] + qs[d] * _apply(k[0, g, j, d], spec.k_scale), [l])
                    dot = part[0]
                    for l in range(1, dl):
                        dot = dot + part[l]
                    s = _apply(dot, spec.score_scale)
                    for b, bh in zip(biases, spec.bias_heads):
                        s = s + b[0, h if bh > 1 else 0, 0, j]
                    T.buffer_store(score, s, [j])
                with T.serial(n, n_vec * L) as j:  # pad to whole vectors: exp(-inf - max) = 0
                    T.buffer_store(score, neg_inf, [j])
                # row max over lane partials
                with T.vectorized(0, L) as l:
                    T.buffer_store(part, neg_inf, [l])
                with T.serial(0, n_vec) as jo:
                    with T.vectorized(0, L) as l:
                        T.buffer_store(part, tirx.max(part[l], score[jo * L + l]), [l])
                T.buffer_store(red, part[0], [0])
                for l in range(1, L):
                    T.buffer_store(red, tirx.max(red[0], part[l]), [0])
                # exp(s - max) and its sum
                with T.vectorized(0, L) as l:
                    T.buffer_store(part, zero, [l])
                with T.serial(0, n_vec) as jo:
                    with T.vectorized(0, L) as l:
                        T.buffer_store(score, _fast_exp_f32(score[jo * L + l] - red[0]), [jo * L + l])
                        T.buffer_store(part, part[l] + score[jo * L + l], [l])
                T.buffer_store(red, part[0], [1])
                for l in range(1, L):
                    T.buffer_store(red, red[1] + part[l], [1])
                # normalise (and the graph's NaN guard)
                with T.serial(0, n_vec) as jo:
                    with T.vectorized(0, L) as l:
                        p = score[jo * L + l] / red[1]
                        if spec.nan_fill is not None:
                            p = tirx.Select(tirx.isnan(p), tirx.const(spec.nan_fill, f32), p)
                        T.buffer_store(score, p, [jo * L + l])
                # P . V over the valid keys, the head-dim row in registers
                with T.vectorized(0, D) as d:
                    T.buffer_store(acc, zero, [d])
                with T.serial(0, n) as j:
                    with T.vectorized(0, D) as d:
                        T.buffer_store(acc, acc[d] + score[j] * v[0, g, j, d], [d])
                with T.vectorized(0, D) as d:
                    T.buffer_store(out, acc[d], [0, h, 0, d])
    return ib.get().without_attr("global_symbol")
