"""ONNX models with external data (``save_as_external_data``): compiled without a second copy of the weights.

The large tensors stay out of the loaded proto (read one at a time into the TVM constants),
the compile matches onnxruntime (fp32: rtol 1e-4, atol 1e-5) from any working directory,
the compile-memory guard counts the external bytes whatever the data file is called, and a
bad reference (missing or truncated file, a location outside the model's folder) is refused
in one line.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import FP32_ATOL, FP32_RTOL, assert_clean_error, cli, ort_run

DIM, ROWS = 301, 3  # 301 x 301 fp32 = 362 KB per weight: stored externally (threshold 1 KB)


def chain_model(layers: int = 3, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)).astype("float32"), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(DIM).astype("float32"), f"b{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [out])]
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, DIM])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(folder, location="weights.bin"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chain.onnx"
    onnx.save(chain_model(), path, save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=1024)
    return path


@pytest.fixture
def small_inline(monkeypatch):
    """Keep every external tensor in its file (by default tensors up to 1 MiB are read into the proto)."""
    from tvm_autoglm import onnx_external

    monkeypatch.setattr(onnx_external, "INLINE_BYTES", 0)


def _inputs():
    return {"x": np.random.default_rng(4).standard_normal((ROWS, DIM)).astype("float32")}


def test_large_tensors_stay_in_their_file(tmp_path, small_inline):
    from tvm_autoglm.onnx_model import load_model

    path = save_external(tmp_path / "m")
    proto, _ = load_model(path)
    weights = [t for t in proto.graph.initializer if t.name.startswith("w")]
    assert weights and all(t.data_location == TensorProto.EXTERNAL and not t.raw_data for t in weights)
    assert proto.ByteSize() < 10_000  # the graph, not the 1.1 MB of weights


def test_compiles_from_another_directory_and_matches_onnxruntime(tmp_path, monkeypatch, small_inline):
    import tvm_autoglm

    path = save_external(tmp_path / "m")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the data file is found beside the model, not in the working directory
    want = ort_run(path, _inputs())
    for weights in ("embedded", "external"):
        got = tvm_autoglm.compile(path, weights=weights).run(_inputs())
        np.testing.assert_allclose(got["y"], want["y"], rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=weights)


def test_default_inlining_of_small_tensors_compiles_too(tmp_path):
    import tvm_autoglm
    from tvm_autoglm.onnx_model import load_model

    path = save_external(tmp_path / "m")
    proto, _ = load_model(path)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)  # all under 1 MiB
    want = ort_run(path, _inputs())
    np.testing.assert_allclose(tvm_autoglm.compile(path).run(_inputs())["y"], want["y"], rtol=FP32_RTOL, atol=FP32_ATOL)


def test_memory_guard_counts_external_data_whatever_its_name(tmp_path):
    from tvm_autoglm.onnx_model import load_model
    from tvm_autoglm.resources import BASELINE_BYTES, COMPILE_MEMORY_FACTOR, model_size

    path = save_external(tmp_path / "m", location="tensors.bin")  # not "<stem>*.data"
    data = (tmp_path / "m" / "tensors.bin").stat().st_size
    proto, _ = load_model(path)
    size = model_size(proto, path)
    assert data <= size <= data + path.stat().st_size + 64 * 1024
    # memory for the graph alone but not for its external weights: refused before any work
    have = BASELINE_BYTES + int(COMPILE_MEMORY_FACTOR * data / 2)
    result = cli("compile", "--model", path, "--output", tmp_path / "m.so", env={"AUTOGLM_AVAILABLE_MEMORY": str(have)})
    line = assert_clean_error(result, "needs about")
    assert result.returncode == 2 and f"{size / 2**30:.2f} GiB model" in line


def _damaged(tmp_path, how):
    path = save_external(tmp_path / "m")
    data = tmp_path / "m" / "weights.bin"
    if how == "missing":
        data.unlink()
    elif how == "truncated":
        data.write_bytes(data.read_bytes()[:1000])
    else:  # a location outside the model's folder
        model = onnx.load(path, load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../outside.bin"
        (tmp_path / "outside.bin").write_bytes(data.read_bytes())
        path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("how, needles", [
    ("missing", ("weights.bin", "not found")),
    ("truncated", ("weights.bin", "runs past the end", "truncated")),
    ("escape", ("../outside.bin", "model's folder")),
])
def test_bad_external_references_are_refused_in_one_line(tmp_path, how, needles):
    from tvm_autoglm.errors import ModelLoadError
    from tvm_autoglm.onnx_model import load_model

    path = _damaged(tmp_path, how)
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_a_constant_node_stored_externally_is_read_in(tmp_path, small_inline):
    """A Constant node's value reaches TVM through onnx's reader, not the initializer path: it is read at load."""
    import tvm_autoglm
    from tvm_autoglm.onnx_model import load_model

    table = np.random.default_rng(2).standard_normal((ROWS, DIM)).astype("float32")
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(table, "c_value")),
             helper.make_node("Mul", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, DIM])])
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / "const.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, save_as_external_data=True,
              convert_attribute=True, location="const.bin", size_threshold=1024)
    assert onnx.load(path, load_external_data=False).graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    proto, _ = load_model(path)
    assert proto.graph.node[0].attribute[0].t.data_location != TensorProto.EXTERNAL
    got = tvm_autoglm.compile(path).run(_inputs())["y"]
    np.testing.assert_allclose(got, ort_run(path, _inputs())["y"], rtol=FP32_RTOL, atol=FP32_ATOL)
