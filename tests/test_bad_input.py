"""Bad input: each case gives one error line naming the problem, a non-zero exit and no traceback."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import assert_clean_error, cli, mlp_model


def test_missing_model_file(workdir):
    assert_clean_error(cli("compile", "--model", workdir / "nope.onnx", "--output", workdir / "x.so"), "nope.onnx", "not found")


def test_truncated_model_file(workdir, mlp_onnx):
    truncated = workdir / "truncated.onnx"
    data = mlp_onnx.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("compile", "--model", truncated, "--output", workdir / "x.so"), "truncated.onnx")


def test_file_that_is_not_onnx(workdir):
    fake = workdir / "notes.onnx"
    fake.write_text("this is a text file, not a protobuf\n" * 10)
    assert_clean_error(cli("compile", "--model", fake, "--output", workdir / "x.so"), "notes.onnx", "ONNX")


def test_unsupported_op_names_op_and_node(workdir):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="first_relu"),
        helper.make_node("Foo", ["a"], ["b"], name="bar", domain="com.example"),
        helper.make_node("Bogus", ["b"], ["y"], name="baz", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = workdir / "custom.onnx"
    onnx.save(model, path)
    line = assert_clean_error(cli("compile", "--model", path, "--output", workdir / "x.so"), "com.example.Foo (node 'bar')")
    assert "com.example.Bogus (node 'baz')" in line  # every unsupported node at once
    assert "Relu" not in line


def test_unknown_target_lists_known_ones(workdir, mlp_onnx):
    line = assert_clean_error(cli("compile", "--model", mlp_onnx, "--target", "tpu-v9", "--output", workdir / "x.so"), "tpu-v9")
    assert "cpu" in line and "gpu-hopper" in line and "npu-sim" in line


def test_unknown_name_in_input_shape(workdir, mlp_onnx):
    assert_clean_error(
        cli("compile", "--model", mlp_onnx, "--input-shape", "pixels:1x3", "--output", workdir / "x.so"), "pixels", "'x'", "'scale'"
    )


def test_dynamic_dims_without_input_shape(workdir, token_onnx):
    assert_clean_error(cli("compile", "--model", token_onnx, "--output", workdir / "x.so"), "input_ids", "--input-shape")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_missing_input_at_execute(workdir, mlp_so):
    npz = _npz(workdir / "only_x.npz", x=np.zeros((2, 16), "float32"))
    assert_clean_error(cli("execute", "--binary", mlp_so, "--input", npz), "missing input", "scale")


def test_wrong_shape_at_execute(workdir, mlp_so):
    npz = _npz(workdir / "bad_shape.npz", x=np.zeros((3, 16), "float32"), scale=np.ones(1, "float32"))
    assert_clean_error(cli("execute", "--binary", mlp_so, "--input", npz), "'x'", "3x16", "2x16")


def test_wrong_dtype_at_execute(workdir, mlp_so):
    npz = _npz(workdir / "bad_dtype.npz", x=np.zeros((2, 16), "float64"), scale=np.ones(1, "float32"))
    assert_clean_error(cli("execute", "--binary", mlp_so, "--input", npz), "'x'", "float64", "float32")


def test_wrong_bin_size_at_execute(workdir, mlp_so):
    raw = workdir / "short.bin"
    raw.write_bytes(b"\0" * 12)
    assert_clean_error(cli("execute", "--binary", mlp_so, "--input", raw), "12 bytes", "132")


def test_tampered_library_is_refused_before_loading(workdir, mlp_onnx):
    out = workdir / "tampered" / "mlp.so"
    cli("compile", "--model", mlp_onnx, "--output", out, "--quiet", check=True)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    npz = _npz(workdir / "t_in.npz", x=np.zeros((2, 16), "float32"), scale=np.ones(1, "float32"))
    assert_clean_error(cli("execute", "--binary", out, "--input", npz), "sha256", "mlp.so")


def test_missing_manifest_is_refused(workdir, mlp_onnx):
    out = workdir / "nomanifest" / "mlp.so"
    cli("compile", "--model", mlp_onnx, "--output", out, "--quiet", check=True)
    out.with_suffix(".json").unlink()
    assert_clean_error(cli("execute", "--binary", out), "manifest", "not found")


def test_bad_output_suffix(workdir, mlp_onnx):
    assert_clean_error(cli("compile", "--model", mlp_onnx, "--output", workdir / "x.bin"), ".so", ".glm")


def test_glm_with_path_traversal_is_refused(tmp_path):
    import io
    import tarfile

    evil = tmp_path / "in" / "evil.glm"
    evil.parent.mkdir()
    with tarfile.open(evil, "w") as tar:
        for name in ("../../escaped.txt", "model.json"):
            payload = b"{}"
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    # A .glm is extracted into $AUTOGLM_CACHE/glm/<sha>/, so ../../escaped.txt would land
    # in $AUTOGLM_CACHE itself: give the run its own cache and look everywhere under tmp_path.
    cache = tmp_path / "cache"
    assert_clean_error(cli("execute", "--binary", evil, env={"AUTOGLM_CACHE": str(cache)}), "refusing member", "../../escaped.txt")
    assert not (cache / "escaped.txt").exists()
    assert list(tmp_path.rglob("escaped.txt")) == []
