"""fuse_attention: scaled-dot-product attention in every exported form -> one kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, const_node, import_model, kernels, make_model, op_counts
from tvm import relax

from tvm_autoglm.passes.attention import COMPOSITE_NAME, fuse_attention

B, H, S, D = 1, 2, 8, 16
QKV = {"q": [B, H, S, D], "k": [B, H, S, D], "v": [B, H, S, D]}
MIN = float(np.finfo(np.float32).min)


def _composites(mod) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, relax.Function) and f.attrs is not None and f.attrs.get("Composite") == COMPOSITE_NAME]


def _attention_nodes(form: str, softmax_axis: int = -1):
    kt = helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])
    if form == "bert_eager":  # matmul / sqrt(d) + additive padding mask
        nodes = [kt, const_node("sd", math.sqrt(D)), helper.make_node("MatMul", ["q", "kt"], ["s0"]),
                 helper.make_node("Div", ["s0", "sd"], ["s1"]), helper.make_node("Add", ["s1", "mask"], ["s"])]
    elif form == "sdpa":  # torch SDPA decomposition: sqrt(scale) on q and k, NaN guard after softmax
        sc = 1 / math.sqrt(math.sqrt(D))
        nodes = [kt, const_node("c", sc), helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
                 helper.make_node("MatMul", ["qs", "ks"], ["s0"]), helper.make_node("Add", ["s0", "mask"], ["s"])]
    elif form == "causal":  # GPT-NeoX/GPT-2 eager: where(causal, s, min) then the padding mask
        tri = np.tril(np.ones((S, S), dtype=bool)).reshape(1, 1, S, S)
        nodes = [kt, helper.make_node("Constant", [], ["tri"], value=helper.make_tensor("tri", 9, tri.shape, tri.flatten().tolist())),
                 const_node("mn", MIN), const_node("scale", 1 / math.sqrt(D)),
                 helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "scale"], ["s1"]),
                 helper.make_node("Where", ["tri", "s1", "mn"], ["s2"]), helper.make_node("Add", ["s2", "mask"], ["s"])]
    elif form == "t5":  # no scaling, position bias added
        nodes = [kt, helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Add", ["s0", "mask"], ["s"])]
    else:
        raise ValueError(form)
    nodes.append(helper.make_node("Softmax", ["s"], ["p0"], axis=softmax_axis))
    if form == "sdpa":
        nodes += [const_node("zero", 0.0), helper.make_node("IsNaN", ["p0"], ["nan"]), helper.make_node("Where", ["nan", "zero", "p0"], ["p"])]
    else:
        nodes.append(helper.make_node("Identity", ["p0"], ["p"]))
    nodes += [helper.make_node("MatMul", ["p", "v"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "shape"], ["y"])]
    return nodes


def _model(form: str, softmax_axis: int = -1, scores_out: bool = False):
    inputs = dict(QKV, mask=[B, 1, 1, S] if form != "t5" else [1, H, S, S])
    outputs = {"y": [B, S, H * D]}
    if scores_out:
        outputs["s"] = None
    model = make_model(_attention_nodes(form, softmax_axis), inputs, outputs)
    shape = helper.make_tensor("shape", 7, [3], [B, S, H * D])
    model.graph.initializer.append(shape)
    return model


def _inputs(form: str):
    rng = np.random.default_rng(0)
    data = {n: rng.standard_normal(s).astype("float32") for n, s in QKV.items()}
    if form == "t5":
        data["mask"] = rng.standard_normal((1, H, S, S)).astype("float32")
    else:
        mask = np.zeros((B, 1, 1, S), dtype="float32")
        mask[..., -2:] = MIN  # two padded positions, as BERT writes them
        data["mask"] = mask
    return data


@pytest.mark.parametrize("form", ["bert_eager", "sdpa", "causal", "t5"])
def test_attention_becomes_one_kernel(form):
    model = _model(form)
    before = import_model(model)
    mod = fuse_attention()(before)
    assert len(_composites(mod)) == 1
    assert "nn.softmax" not in op_counts(mod)  # moved into the group
    names = kernels(mod)
    with_softmax = [n for n in names if "softmax" in n]
    assert len(with_softmax) == 1 and with_softmax[0].count("matmul") == 2
    assert len(names) < len(kernels(before))
    assert_parity(mod, model, _inputs(form))


def test_softmax_over_other_axis_is_left_alone():
    model = _model("bert_eager", softmax_axis=2)
    before = import_model(model)
    mod = fuse_attention()(before)
    assert _composites(mod) == []
    tvm.ir.assert_structural_equal(mod, before)


def test_scores_used_outside_are_left_alone():
    model = _model("bert_eager", scores_out=True)
    before = import_model(model)
    mod = fuse_attention()(before)
    assert _composites(mod) == []
    assert_parity(mod, model, _inputs("bert_eager"))


def _hf_model(name: str):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    common = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(**common))
    return transformers.GPTNeoXModel(transformers.GPTNeoXConfig(**common))


@pytest.mark.slow  # transformers import + dynamo export: 25-45 s each on 2 cores
@pytest.mark.parametrize("name", ["bert", "gpt-neox"])
def test_hf_dynamo_exports(tmp_path, name):
    torch = pytest.importorskip("torch")
    import onnx

    model = _hf_model(name).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask, return_dict=False)[0]

    ids = torch.randint(0, 100, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.int64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(Wrap(model), (ids, mask), str(path), dynamo=True, opset_version=18, input_names=["ids", "mask"])
    proto = onnx.load(str(path))
    shapes = {"ids": [1, 8], "mask": [1, 8]}
    mod = relax.transform.FoldConstant()(tvm.relax.frontend.onnx.from_onnx(proto, shape_dict=shapes))
    mod = fuse_attention()(mod)
    assert len(_composites(mod)) == 1  # one layer, one attention
    assert "nn.softmax" not in op_counts(mod)
    ids_np = np.random.default_rng(0).integers(0, 100, (1, 8)).astype("int64")
    mask_np = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], dtype="int64")  # padded tail: the mask must stay exact
    import onnxruntime as ort

    from passes_helpers import run_tvm

    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids_np, "mask": mask_np})
    got = run_tvm(mod, [ids_np, mask_np])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)


def _scores_var(mod) -> str:
    """The name of the Q.K^T matmul binding (the first matmul of main)."""
    return next(b.var.name for blk in mod["main"].body.blocks for b in blk.bindings
                if isinstance(b.value, relax.Call) and b.value.op.name == "relax.matmul")


def test_tally_counts_one_core_and_explains_the_declined_ones():
    from tvm_autoglm.passes.tally import recording

    with recording() as tally:
        fuse_attention()(import_model(_model("causal")))
    assert tally.rewrites == 1 and tally.declines == []

    before = import_model(_model("bert_eager", softmax_axis=2))
    with recording() as tally:
        fuse_attention()(before)
    assert tally.rewrites == 0
    assert tally.declines == [f"matmul {_scores_var(before)} (attention scores): softmax over axis 2, not the last"]

    before = import_model(_model("bert_eager", scores_out=True))
    with recording() as tally:
        fuse_attention()(before)
    assert tally.rewrites == 0 and len(tally.declines) == 1
    assert tally.declines[0].startswith(f"matmul {_scores_var(before)} (attention scores): ") and "also used outside the group" in tally.declines[0]
