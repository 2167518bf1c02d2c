"""``decode_attention`` on small hand-written decode modules: what it rewrites and each reason it declines.

The module is the shape of a generator's decode function after ``fuse_attention``: in-place
cache writes (``autoglm.kernel = write_kv_cache``), ``permute_dims`` of the key cache, and one
composite attention group. Each negative case changes one thing and checks the IR is unchanged
and the decline reason names it. End-to-end parity is in tests/generate/test_decode_attention.py.
"""

from __future__ import annotations

import pytest

BASE = """
@I.ir_module
class Mod:
    @T.prim_func(private=True)
    def write(cache: T.Buffer((1, KV, 8, 4), "float32"), rows: T.Buffer((1, KV, 1, 4), "float32"), pos: T.Buffer((1,), "int64")):
        T.func_attr({"autoglm.kernel": "WRITE_KERNEL", "tirx.is_scheduled": True, "op_pattern": 8})
        for h, d in T.grid(KV, 4):
            cache[0, h, T.Cast("int32", pos[0]), d] = rows[0, h, 0, d]

    @R.function(private=True)
    def attn(q: R.Tensor((1, 2, QROWS, 4), "float32"), s: R.Tensor((), "float32"), kt: R.Tensor((1, 2, 4, 8), "float32"),
             mask: R.Tensor(MASK, "float32"), v: R.Tensor((1, 2, 8, 4), "float32")) -> R.Tensor((1, 2, QROWS, 4), "float32"):
        R.func_attr({"Composite": "autoglm.attention", "Primitive": True})
        with R.dataflow():
            a = R.multiply(q, s)
            b = R.matmul(a, kt)
            c = R.add(b, mask)
            d = R.nn.softmax(c, axis=SOFTMAX_AXIS)
            EXTRA
            o = R.matmul(d, v)
            R.output(o)
        return o

    @R.function
    def main(q: R.Tensor((1, 2, QROWS, 4), "float32"), nk: R.Tensor((1, KV, 1, 4), "float32"), nv: R.Tensor((1, KV, 1, 4), "float32"),
             kc: R.Tensor((1, KV, 8, 4), "float32"), vc: R.Tensor((1, KV, 8, 4), "float32"), mask: R.Tensor(MASK, "float32"),
             pos: R.Tensor((1,), "int64"), pos2: R.Tensor((1,), "int64")):
        cls = Mod
        with R.dataflow():
            k2 = R.call_tir_inplace(cls.write, (kc, nk, pos), out_ty=R.Tensor((1, KV, 8, 4), "float32"), inplace_indices=[0])
            v2 = R.call_tir_inplace(cls.write, (vc, nv, VPOS), out_ty=R.Tensor((1, KV, 8, 4), "float32"), inplace_indices=[0])
            KEYS
            VALUES
            o = cls.attn(q, R.const(0.5, "float32"), kt, mask, VV)
            R.output(o)
        return o
"""

PLAIN_KEYS = "kt = R.permute_dims(k2, axes=[0, 1, 3, 2])"
PLAIN_VALUES = "pass"
GQA_KEYS = ("ke = R.expand_dims(k2, axis=[2])\n            kb = R.broadcast_to(ke, R.shape([1, 1, 2, 8, 4]))\n"
            "            kr = R.reshape(kb, R.shape([1, 2, 8, 4]))\n            kt = R.permute_dims(kr, axes=[0, 1, 3, 2])")
GQA_VALUES = ("ve = R.expand_dims(v2, axis=[2])\n            vb = R.broadcast_to(ve, R.shape([1, 1, 2, 8, 4]))\n"
              "            vv = R.reshape(vb, R.shape([1, 2, 8, 4]))")


def module(write_kernel="write_kv_cache", kv=2, qrows=1, mask="(1, 1, 1, 8)", softmax_axis=-1, extra="", keys=PLAIN_KEYS, values=PLAIN_VALUES, vpos="pos"):
    text = (BASE.replace("QROWS", str(qrows)).replace("KV", str(kv)).replace("MASK", mask).replace("SOFTMAX_AXIS", str(softmax_axis))
            .replace("EXTRA", extra or "pass").replace("KEYS", keys).replace("VALUES", values).replace("VPOS", vpos).replace("WRITE_KERNEL", write_kernel)
            .replace("VV", "v2" if values == PLAIN_VALUES else "vv"))
    text = text.replace("            pass\n", "")
    return parse(text)


def parse(text):
    from tvm.script import from_source
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    return from_source(text, extra_vars={"I": I, "R": R, "T": T})


def run_pass(mod):
    import tvm

    from tvm_autoglm.passes.decode_attention import decode_attention_pass
    from tvm_autoglm.passes.tally import recording

    with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), recording() as tally:
        out = decode_attention_pass(mod)
    return out, tally


def kernel_calls(mod):
    from tvm import relax

    names = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            names.append(mod[expr.args[0]].attrs["autoglm.kernel"])

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


@pytest.mark.parametrize("kv,keys,values", [(2, PLAIN_KEYS, PLAIN_VALUES), (1, GQA_KEYS, GQA_VALUES)], ids=["mha", "gqa"])
def test_decode_attention_replaces_the_group_and_reads_the_caches_in_place(kv, keys, values):
    from tvm import relax

    mod = module(kv=kv, keys=keys, values=values)
    out, tally = run_pass(mod)
    assert tally.rewrites == 1 and not tally.declines
    assert kernel_calls(out) == ["decode_attention"]
    call = next(b.value for b in out["main"].body.blocks[0].bindings if getattr(b.value.op, "name", "") == "relax.call_tir")
    q, k, v, mask, pos = call.args[1].fields
    bound = {b.var: b.value for b in out["main"].body.blocks[0].bindings}
    for cache in (k, v):  # the kernel reads the in-place write itself: no permute_dims, no GQA repeat in between
        assert getattr(bound[cache].op, "name", "") == "relax.call_tir_inplace"
    assert pos.name == "pos" and mask.name == "mask"
    spec_kernel = out[call.args[0]]
    assert [int(d) for d in spec_kernel.params[1].shape] == [1, kv, 8, 4]
    assert isinstance(out["main"], relax.Function)


@pytest.mark.parametrize("change,reason", [
    (dict(qrows=2, mask="(1, 1, 2, 8)"), "expected one row of batch 1"),
    (dict(softmax_axis=2), "softmax over axis 2"),
    (dict(mask="(1, 1, 8)"), "mask float32[1, 1, 8] is not float32[1, 1|2, 1, 8]"),
    (dict(extra="d = R.multiply(d, s)"), "multiply where the decode form has NaN guard/P.V"),
    (dict(keys="kt = R.permute_dims(kc, axes=[0, 1, 3, 2])"), "keys are not read from an in-place cache write"),
    (dict(keys="kt = R.permute_dims(R.permute_dims(k2, axes=[0, 1, 3, 2]), axes=[0, 1, 2, 3])"), "keys are not permute_dims(cache, [0, 1, 3, 2])"),
    (dict(values="vv = R.add(v2, v2)"), "values are not read from an in-place cache write"),
    (dict(vpos="pos2"), "keys and values are written at different positions"),
    (dict(kv=1, keys=GQA_KEYS.replace("[1, 1, 2, 8, 4]", "[1, 2, 1, 8, 4]").replace("axis=[2]", "axis=[1]"), values=GQA_VALUES),
     "keys are not read from an in-place cache write"),
])
def test_decode_attention_declines_what_it_cannot_prove(change, reason):
    import tvm

    mod = module(**change)
    out, tally = run_pass(mod)
    assert tally.rewrites == 0
    assert out.same_as(mod) or tvm.ir.structural_equal(out, mod)
    assert any(reason in d for d in tally.declines), tally.declines


def test_modules_without_cache_writes_are_untouched():
    """Ordinary models and prefill (attention over a concat, not over cache writes) have no candidate."""
    plain = module(write_kernel="some_other_kernel")
    out, tally = run_pass(plain)
    assert out.same_as(plain) and tally.rewrites == 0 and not tally.declines
