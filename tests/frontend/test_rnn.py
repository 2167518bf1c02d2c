"""ONNX LSTM / GRU / RNN (tvm_autoglm/frontend/rnn.py): parity, structure, refusals.

References: onnxruntime for layout 0 (it refuses layout 1), a float64 numpy implementation
of the ONNX equations for layout 1. Tolerance: 1e-4 absolute and relative on every
output (Y, Y_h, Y_c) - the states are in [-1, 1] (h) or small (c), so 1e-4 is tight.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _onnx_builders import make_model
from helpers import assert_clean_error, cli, ort_run

import tvm_autoglm
from tvm_autoglm.errors import UnsupportedModelError

RTOL = ATOL = 1e-4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def rnn_model(op, seq, batch, input_size, hidden, direction="forward", bias=True, h0=True, c0=True,
              lbr=None, layout=0, seq_lens=None, seed=0, scale=0.4, **attrs):
    """One LSTM/GRU/RNN node with seeded weights; X (and h0/c0 when asked) are graph inputs.

    ``seq_lens``: None (absent), "input" (a graph input) or an int list (a constant);
    ``scale``: of the random weights (large values drive the gates into saturation).
    Returns (model, feeds).
    """
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits = [
        numpy_helper.from_array((rng.standard_normal((dirs, g * hidden, input_size)) * scale).astype("float32"), "W"),
        numpy_helper.from_array((rng.standard_normal((dirs, g * hidden, hidden)) * scale).astype("float32"), "R"),
    ]
    names = ["X", "W", "R"]
    if bias:
        inits.append(numpy_helper.from_array((rng.standard_normal((dirs, 2 * g * hidden)) * scale).astype("float32"), "B"))
    names.append("B" if bias else "")
    x_shape = [seq, batch, input_size] if layout == 0 else [batch, seq, input_size]
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if seq_lens == "input":
        graph_inputs.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32, [batch]))
        names.append("seq_lens")
    elif seq_lens is not None:
        inits.append(numpy_helper.from_array(np.array(seq_lens, "int32"), "seq_lens"))
        names.append("seq_lens")
    else:
        names.append("")
    names.append("h0" if h0 else "")
    if h0:
        graph_inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape))
    if op == "LSTM":
        names.append("c0" if c0 else "")
        if c0:
            graph_inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape))
    while names and names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    if layout:
        attrs["layout"] = layout
    if lbr is not None:
        attrs["linear_before_reset"] = lbr
    node = helper.make_node(op, names, outputs, name="rnn0", hidden_size=hidden, direction=direction, **attrs)
    y_shape = [seq, dirs, batch, hidden] if layout == 0 else [batch, seq, dirs, hidden]
    graph_outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)]
    graph_outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape) for n in outputs[1:]]
    model = make_model([node], graph_inputs, graph_outputs, inits, opset=14, name="rnn", check=True)
    feeds = {}
    for vi in graph_inputs:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.name == "seq_lens":
            feeds[vi.name] = np.full(shape, seq, "int32")
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype("float32")
    return model, feeds


def numpy_reference(model: onnx.ModelProto, feeds: dict) -> dict:
    """The ONNX LSTM/GRU/RNN equations in float64 (default activations), any layout."""
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    consts = {i.name: numpy_helper.to_array(i).astype("float64") for i in model.graph.initializer}
    op, hidden, layout = node.op_type, attrs["hidden_size"], attrs.get("layout", 0)
    direction = attrs.get("direction", b"forward").decode()
    x = feeds["X"].astype("float64")
    if layout:
        x = x.transpose(1, 0, 2)
    seq, batch, _ = x.shape
    w, r = consts["W"], consts["R"]
    dirs, g = w.shape[0], GATES[op]
    b = consts.get("B", np.zeros((dirs, 2 * g * hidden)))

    def state(name):
        if name in feeds:
            s = feeds[name].astype("float64")
            return s.transpose(1, 0, 2) if layout else s
        return np.zeros((dirs, batch, hidden))

    h0, c0 = state("h0"), state("c0")
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    y = np.zeros((seq, dirs, batch, hidden))
    y_h, y_c = np.zeros((dirs, batch, hidden)), np.zeros((dirs, batch, hidden))
    for d in range(dirs):
        backwards = direction == "reverse" or (direction == "bidirectional" and d == 1)
        h, c = h0[d], c0[d]
        wb, rb = b[d, : g * hidden], b[d, g * hidden :]
        for t in (reversed(range(seq)) if backwards else range(seq)):
            xw = x[t] @ w[d].T + wb
            hr = h @ r[d].T + rb
            if op == "LSTM":
                gi, go, gf, gc = np.split(xw + hr, 4, axis=1)
                c = sig(gf) * c + sig(gi) * np.tanh(gc)
                h = sig(go) * np.tanh(c)
            elif op == "GRU":
                xz, xr, xh = np.split(xw, 3, axis=1)
                hz, hr_, hh = np.split(hr, 3, axis=1)
                z, rr = sig(xz + hz), sig(xr + hr_)
                if attrs.get("linear_before_reset", 0):
                    cand = np.tanh(xh + rr * hh)
                else:
                    cand = np.tanh(xh + (rr * h) @ r[d][2 * hidden :].T + rb[2 * hidden :])
                h = (1 - z) * cand + z * h
            else:
                h = np.tanh(xw + hr)
            y[t, d] = h
        y_h[d], y_c[d] = h, c
    out = {"Y": y, "Y_h": y_h, "Y_c": y_c}
    if layout:
        out = {"Y": y.transpose(2, 0, 1, 3), "Y_h": y_h.transpose(1, 0, 2), "Y_c": y_c.transpose(1, 0, 2)}
    return {name: out[name] for name in node.output}


def assert_parity(model, feeds, opt_level, reference=None, target="cpu"):
    expected = reference if reference is not None else ort_run(model, feeds)
    got = tvm_autoglm.compile(model, target=target, opt_level=opt_level).run(**feeds)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=f"output {name}")


# (op, kwargs, (seq, batch, input, hidden), opt level): every variant, the shapes and opt levels varied across them.
CASES = [
    ("LSTM", {}, (7, 3, 3, 5), 0),
    ("LSTM", {"direction": "reverse"}, (1, 1, 32, 16), 1),
    ("LSTM", {"direction": "bidirectional"}, (7, 3, 32, 64), 3),
    ("LSTM", {"direction": "bidirectional", "bias": False, "h0": False, "c0": False}, (7, 1, 3, 16), 2),
    ("LSTM", {"h0": False}, (7, 1, 32, 5), 3),  # initial_c without initial_h
    ("LSTM", {"c0": False, "seq_lens": [7, 7, 7]}, (7, 3, 3, 16), 1),  # constant full-length sequence_lens
    ("GRU", {"lbr": 0}, (7, 3, 32, 64), 3),
    ("GRU", {"lbr": 0, "direction": "bidirectional", "bias": False}, (7, 1, 3, 5), 0),
    ("GRU", {"lbr": 1}, (1, 3, 3, 16), 2),
    ("GRU", {"lbr": 1, "direction": "reverse", "h0": False}, (7, 1, 32, 64), 1),
    ("RNN", {}, (7, 3, 32, 5), 3),
    ("RNN", {"direction": "bidirectional", "h0": False, "bias": False}, (7, 1, 3, 64), 0),
    ("RNN", {"direction": "reverse"}, (1, 3, 3, 16), 2),
    ("LSTM", {"scale": 4.0}, (7, 3, 32, 16), 3),  # saturated gates: the tanh/sigmoid approximation's clamp
    ("GRU", {"lbr": 0, "scale": 4.0}, (7, 1, 32, 5), 1),
]


@pytest.mark.parametrize("op,kwargs,shape,opt_level", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_parity_with_onnxruntime(op, kwargs, shape, opt_level):
    seq, batch, input_size, hidden = shape
    model, feeds = rnn_model(op, seq, batch, input_size, hidden, **kwargs)
    assert_parity(model, feeds, opt_level)


@pytest.mark.parametrize("per_step", [False, True], ids=["per-direction-threads", "per-step-threads"])
@pytest.mark.parametrize("op,kwargs", [("LSTM", {"direction": "bidirectional"}), ("GRU", {"lbr": 0, "direction": "reverse"}),
                                       ("GRU", {"lbr": 1, "direction": "bidirectional"}), ("RNN", {})])
def test_both_thread_strategies(monkeypatch, per_step, op, kwargs):
    """The kernel's two parallel layouts (chosen by step size) give the same answers."""
    from tvm_autoglm.frontend import rnn_kernel

    monkeypatch.setattr(rnn_kernel, "STEP_PARALLEL_MIN_MACS", 0 if per_step else 1 << 40)
    model, feeds = rnn_model(op, 7, 3, 3, 70, **kwargs)  # 70: several tiles (RNN tiles are 64 wide on AVX2)
    shape = rnn_kernel.RecurrenceShape(op.lower(), 7, 3, 70, 2 if "bidirectional" in kwargs.values() else 1, False, lanes=8)
    assert rnn_kernel.steps_in_parallel(shape) == per_step
    assert_parity(model, feeds, 2, target="cpu-x86-avx2")  # pinned: the tiling (and so the strategy) depends on the lanes


def test_numpy_reference_agrees_with_onnxruntime():
    """The float64 reference used for layout 1 is itself checked against onnxruntime (layout 0)."""
    for op, kwargs in (("LSTM", {"direction": "bidirectional"}), ("GRU", {"lbr": 0}), ("GRU", {"lbr": 1}), ("RNN", {})):
        model, feeds = rnn_model(op, 5, 2, 3, 6, **kwargs)
        ref, ort_out = numpy_reference(model, feeds), ort_run(model, feeds)
        for name in ort_out:
            np.testing.assert_allclose(ref[name], ort_out[name], rtol=1e-5, atol=1e-5, err_msg=f"{op} {name}")


@pytest.mark.parametrize("op,kwargs", [("LSTM", {"direction": "bidirectional"}), ("GRU", {"lbr": 0, "direction": "reverse"})])
def test_layout_1_matches_numpy(op, kwargs):
    model, feeds = rnn_model(op, 7, 3, 3, 5, layout=1, **kwargs)
    assert_parity(model, feeds, 3, reference=numpy_reference(model, feeds))


def _torch_rnn_onnx(tmp_path, cell, layers, bidirectional, input_size, hidden, seq, batch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_rnn import export_torch_rnn

    path = tmp_path / f"{cell}.onnx"
    export_torch_rnn(path, cell, layers, bidirectional, input_size, hidden, seq, batch, seed=3)
    return onnx.load(str(path))


@pytest.mark.parametrize("cell,layers,bidirectional,shape", [("LSTM", 2, True, (7, 3, 32, 16)), ("GRU", 2, False, (7, 1, 3, 64))])
def test_torch_exported_model_at_o3(tmp_path, cell, layers, bidirectional, shape):
    seq, batch, input_size, hidden = shape
    model = _torch_rnn_onnx(tmp_path, cell, layers, bidirectional, input_size, hidden, seq, batch)
    assert sum(n.op_type == cell for n in model.graph.node) == layers
    feeds = {"x": np.random.default_rng(4).standard_normal((seq, batch, input_size)).astype("float32")}
    assert_parity(model, feeds, 3)


@pytest.mark.parametrize("target,lanes", [("cpu-x86-avx2", 8), ("cpu-x86-avx512", 16)])
def test_structure_one_kernel_per_node_and_target_tiles(target, lanes):
    """The projection is a GEMM; the recurrence one kernel whose tile is whole vectors of the target."""
    from tvm_autoglm.pipeline import build_relax

    model, _ = rnn_model("LSTM", 7, 1, 32, 64, direction="bidirectional")
    build = build_relax(model, target, 3)
    funcs = {gv.name_hint: f for gv, f in build.mod.functions.items() if hasattr(f, "params") and hasattr(f, "body")}
    recurrences = [name for name in funcs if "lstm_recurrence" in name]
    assert len(recurrences) == 1, sorted(funcs)
    rw = funcs[recurrences[0]].params[1]  # [dirs, tiles, hidden, gates * tile]
    dirs, tiles, hidden, width = (int(v) for v in rw.shape)
    assert (dirs, hidden) == (2, 64)
    tile = width // 4
    assert tile % lanes == 0 and tiles * tile >= 64 and (tiles - 1) * tile < 64
    assert any("matmul" in name for name in funcs), sorted(funcs)


def test_recurrence_is_not_a_tuning_task():
    """The kernel is born scheduled: MetaSchedule must not tune (or replace) it; the projection GEMM is a task."""
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.tuning.tasks import extract

    model, _ = rnn_model("GRU", 7, 1, 32, 16, lbr=1)
    build = build_relax(model, "cpu-x86-avx2", 3)
    keep, skip = extract(build.mod, build.target.tvm_target(), 0.0)
    names = [t.name for t in keep + skip]
    assert not any("recurrence" in n for n in names), names
    assert any("matmul" in n for n in names), names


# --- refusals: one per branch, each naming node, op and the attribute or input ---

REFUSED = [
    ("LSTM", {"activations": ["Relu", "Tanh", "Tanh"]}, "activations"),
    ("GRU", {"activations": ["Sigmoid", "Sigmoid"]}, "activations"),
    ("LSTM", {"clip": 3.0}, "clip"),
    ("LSTM", {"input_forget": 1}, "input_forget"),
    ("GRU", {"linear_before_reset": 2}, "linear_before_reset"),
    ("RNN", {"layout": 2}, "layout"),
    ("RNN", {"direction": "sideways"}, "direction"),
    ("LSTM", {"seq_lens": "input"}, "sequence_lens"),
    ("GRU", {"seq_lens": [7, 5, 7]}, "sequence_lens"),
]


@pytest.mark.parametrize("op,kwargs,needle", REFUSED, ids=[f"{r[0]}-{r[2]}" for r in REFUSED])
def test_support_check_refuses(op, kwargs, needle):
    from tvm_autoglm import onnx_model

    model, _ = rnn_model(op, 7, 3, 3, 5, **kwargs)
    with pytest.raises(UnsupportedModelError) as err:
        onnx_model.check_supported(model)
    message = str(err.value)
    assert f"{op} node 'rnn0'" in message and needle in message and "\n" not in message


def test_support_check_refuses_peepholes_and_dynamic_weights():
    from tvm_autoglm import onnx_model

    model, _ = rnn_model("LSTM", 7, 1, 3, 5)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 15), "float32"), "P"))
    assert len(model.graph.node[0].input) == 7  # X W R B sequence_lens(empty) h0 c0
    model.graph.node[0].input.append("P")
    with pytest.raises(UnsupportedModelError, match=r"LSTM node 'rnn0': input P"):
        onnx_model.check_supported(model)

    model, _ = rnn_model("GRU", 7, 1, 3, 5)
    w = next(i for i in model.graph.initializer if i.name == "R")
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, list(w.dims)))
    with pytest.raises(UnsupportedModelError, match=r"GRU node 'rnn0': input R \('R'\) must be a constant"):
        onnx_model.check_supported(model)


def test_accepts_default_activations_spelled_out():
    from tvm_autoglm import onnx_model

    model, _ = rnn_model("LSTM", 7, 1, 3, 5, direction="bidirectional", activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    onnx_model.check_supported(model)  # no exception: the defaults, spelled out


def test_converter_refuses_sequence_lens_shorter_than_the_sequence():
    """A uniform constant passes the support check (seq unknown there); the converter compares it with seq."""
    model, _ = rnn_model("RNN", 7, 3, 3, 5, seq_lens=[6, 6, 6])
    with pytest.raises(UnsupportedModelError, match=r"node 'rnn0': input sequence_lens = \[6, 6, 6\]"):
        tvm_autoglm.compile(model, opt_level=1)


def test_converter_refuses_gpu_targets():
    model, _ = rnn_model("RNN", 7, 1, 3, 5)
    with pytest.raises(UnsupportedModelError, match="only supported on CPU"):
        from tvm_autoglm.pipeline import build_relax

        build_relax(model, "gpu-ampere", 1)


def test_cli_refusal_is_one_line_exit_2(tmp_path):
    model, _ = rnn_model("LSTM", 7, 1, 3, 5, clip=2.0)
    path = tmp_path / "clip.onnx"
    onnx.save(model, path)
    result = cli("compile", "--model", path, "--output", tmp_path / "clip.so")
    assert result.returncode == 2
    assert_clean_error(result, "LSTM node 'rnn0'", "clip")


def test_inspect_lists_refused_nodes(tmp_path):
    from tvm_autoglm.cli.cmd_inspect import describe
    import argparse

    model, _ = rnn_model("LSTM", 7, 1, 3, 5, input_forget=1)
    path = tmp_path / "forget.onnx"
    onnx.save(model, path)
    info = describe(argparse.Namespace(model=str(path), optimize_level=None, quantize="none"))
    assert info["unsupported"] == []
    assert len(info["refused"]) == 1 and "LSTM node 'rnn0'" in info["refused"][0] and "input_forget" in info["refused"][0]
