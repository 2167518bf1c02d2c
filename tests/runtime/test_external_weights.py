"""``--weights external``: the constants leave the ``.so`` for ``OUT.weights``, memory-mapped at load.

Checked against onnxruntime (fp32: rtol 1e-4, atol 1e-5) and bit for bit against the embedded
build of the same model (same kernels, same transformed weights); the lean runtime loads it
in a fresh process with every weight tensor inside the file's mapping (no copy); a missing,
truncated or mismatched weight file is refused in one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import FP32_ATOL, FP32_RTOL, assert_clean_error, cli, conv_model, mlp_model, ort_run

FEATURES, HIDDEN, BATCH = 251, 517, 3  # odd sizes; w1 is 251 x 517 fp32 = 519 KB of the ~535 KB of weights
#: pinned: the packing checked below is the AVX2 rules' (an AVX2 build also runs on AVX-512 hosts)
TARGET = "cpu-x86-avx2"


@pytest.fixture(scope="module")
def mlp(workdir):
    """(onnx path, external .so, embedded .so, inputs) of one odd-sized MLP."""
    import tvm_autoglm

    folder = workdir / "extw"
    folder.mkdir(exist_ok=True)
    path = folder / "mlp.onnx"
    onnx.save(mlp_model(batch=BATCH, features=FEATURES, hidden=HIDDEN, seed=5), path)
    external = tvm_autoglm.compile(path, target=TARGET, weights="external")
    embedded = tvm_autoglm.compile(path, target=TARGET)
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((BATCH, FEATURES)).astype("float32"), "scale": np.array([0.25], dtype="float32")}
    return {"onnx": path, "external": external, "embedded": embedded, "inputs": inputs,
            "ext_so": external.export(folder / "ext" / "mlp.so"), "emb_so": embedded.export(folder / "emb" / "mlp.so")}


def test_outputs_match_onnxruntime_and_the_embedded_build(mlp):
    want = ort_run(mlp["onnx"], mlp["inputs"])
    got = mlp["external"].run(mlp["inputs"])
    same_kernels = mlp["embedded"].run(mlp["inputs"])
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=name)
        np.testing.assert_array_equal(got[name], same_kernels[name], err_msg=f"{name}: external vs embedded weights")


def test_library_shrinks_by_the_weight_bytes(mlp):
    entry = json.loads(mlp["ext_so"].with_suffix(".json").read_text())["weights"]
    weight_file = mlp["ext_so"].with_suffix(".weights")
    assert entry["file"] == weight_file.name and weight_file.stat().st_size == entry["size"]
    assert entry["bytes"] >= FEATURES * HIDDEN * 4  # w1 at least (possibly packed: never smaller)
    saved = mlp["emb_so"].stat().st_size - mlp["ext_so"].stat().st_size
    assert 0.9 * entry["bytes"] <= saved <= entry["bytes"] + 64 * 1024, (saved, entry["bytes"])
    assert "weights" not in json.loads(mlp["emb_so"].with_suffix(".json").read_text())


def test_weights_are_written_after_our_passes():
    """BN folding and weight packing need constant weights: they ran, and the file holds their results."""
    import tvm_autoglm

    built = tvm_autoglm.compile(conv_model(channels=16, size=9), weights="external")
    entry = built.manifest["weights"]
    assert "fold_conv_bn" in built.manifest["passes"]
    shapes = sorted(tuple(int(d) for d in t.shape) for t in built._weights.tensors.values())
    # the BN statistics (4 x [5]) are folded into the conv weight and bias: no BN-sized tensors are left to lift
    assert all(np.prod(s) > 5 for s in shapes), shapes
    image = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype("float32")
    want = ort_run(conv_model(channels=16, size=9), {"image": image})
    np.testing.assert_allclose(built.run(image=image)["pooled"], want["pooled"], rtol=FP32_RTOL, atol=FP32_ATOL)
    assert entry["functions"]["main"]


def test_packed_dense_weights_are_the_ones_written(mlp):
    """pack_dense_weights turns [K, N] into a tiled 3-D layout at compile time; the file holds that layout."""
    manifest = mlp["external"].manifest
    assert "pack_dense_weights" in manifest["passes"]
    ranks = sorted(len(t.shape) for t in mlp["external"]._weights.tensors.values())
    assert 3 in ranks, f"no packed (3-D) weight among the lifted tensors: ranks {ranks}"


CHILD = r"""
import json, sys
sys.modules["torch"] = None
import numpy as np
import tvm_autoglm.runtime
artifact, inputs_npz, outputs_npz = sys.argv[1:4]
with np.load(inputs_npz) as data:
    inputs = {name: data[name] for name in data.files}
session = tvm_autoglm.runtime.load(artifact)
np.savez(outputs_npz, **session.run(inputs))
weight_file = artifact[:-3] + ".weights"
ranges = []
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5] == weight_file:
        low, high = (int(v, 16) for v in parts[0].split("-"))
        ranges.append((low, high))
inside = [any(low <= np.from_dlpack(t).ctypes.data < high for low, high in ranges) for t in session.weights.values()]
BANNED = ("onnx", "onnxruntime", "tvm_autoglm.pipeline", "tvm_autoglm.external_weights", "tvm.relax.frontend.onnx")
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and any(m == b or m.startswith(b + ".") for b in BANNED))
print(json.dumps({"inside": inside, "mapped": len(ranges), "loaded": loaded}))
"""


def test_lean_runtime_maps_the_file_without_copying(mlp, workdir):
    inputs_npz, outputs_npz = workdir / "extw_in.npz", workdir / "extw_out.npz"
    np.savez(inputs_npz, **mlp["inputs"])
    proc = subprocess.run([sys.executable, "-c", CHILD, str(mlp["ext_so"].resolve()), str(inputs_npz), str(outputs_npz)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"the lean runtime pulled in {report['loaded']}"
    assert report["mapped"] >= 1 and report["inside"] and all(report["inside"]), report
    want = ort_run(mlp["onnx"], mlp["inputs"])
    with np.load(outputs_npz) as got:
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=name)


def _copy(mlp, tmp_path):
    for suffix in (".so", ".json", ".weights"):
        shutil.copy(mlp["ext_so"].with_suffix(suffix), tmp_path / f"m{suffix}")
    np.savez(tmp_path / "in.npz", **mlp["inputs"])
    return tmp_path / "m.so"


def _execute(so):
    return cli("execute", "--binary", so, "--input", so.parent / "in.npz", "--output", so.parent / "out.npz")


def test_execute_runs_a_copied_artifact(mlp, tmp_path):
    so = _copy(mlp, tmp_path)
    result = _execute(so)
    assert result.returncode == 0, result.stderr
    want = ort_run(mlp["onnx"], mlp["inputs"])
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["probs"], want["probs"], rtol=FP32_RTOL, atol=FP32_ATOL)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _rewrite_index(path):
    """Same size, another index: a tensor renamed (w0 -> w9), as another build's file would differ."""
    data = bytearray(path.read_bytes())
    at = data.index(b'"name":"w0"')
    data[at + 9: at + 10] = b"9"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, needles", [
    (lambda p: p.unlink(), ("m.weights", "not found")),
    (_truncate, ("m.weights", "bytes, the manifest expects")),
    (_rewrite_index, ("m.weights", "index sha256", "does not match")),
], ids=["missing", "truncated", "checksum"])
def test_a_bad_weight_file_is_refused_in_one_line(mlp, tmp_path, damage, needles):
    so = _copy(mlp, tmp_path)
    damage(so.with_suffix(".weights"))
    result = _execute(so)
    assert_clean_error(result, *needles)
    assert result.returncode == 2


def test_external_weights_refuse_a_glm_output_before_compiling(mlp, tmp_path):
    result = cli("compile", "--model", mlp["onnx"], "--weights", "external", "--output", tmp_path / "m.glm", "--quiet")
    assert_clean_error(result, "--weights external", ".glm")
    assert result.returncode == 2 and not (tmp_path / "m.glm").exists()


def test_external_weights_refuse_a_non_cpu_target(mlp):
    import tvm_autoglm
    from tvm_autoglm.errors import AutoGLMError

    with pytest.raises(AutoGLMError, match="--weights external supports CPU targets only.*npu-sim"):
        tvm_autoglm.compile(mlp["onnx"], target="npu-sim", weights="external")
    with pytest.raises(AutoGLMError, match="--weights must be one of embedded, external"):
        tvm_autoglm.compile(mlp["onnx"], weights="mmap")


def test_cli_compile_weights_external(mlp, tmp_path):
    so = tmp_path / "cli.so"
    cli("compile", "--model", mlp["onnx"], "--target", TARGET, "--weights", "external", "--output", so, "--quiet", check=True)
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["weights"]["file"] == "cli.weights" and so.with_suffix(".weights").stat().st_size == manifest["weights"]["size"]
    np.savez(tmp_path / "in.npz", **mlp["inputs"])
    assert _execute(so).returncode == 0
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["logits"], mlp["embedded"].run(mlp["inputs"])["logits"])


def test_serve_engine_workers_share_the_mapped_weights(mlp):
    from tvm_autoglm.runtime import resolve_artifact
    from tvm_autoglm.serve.engine import Engine

    library, manifest = resolve_artifact(mlp["ext_so"])
    engine = Engine(library, manifest, workers=2)
    engine.load_and_warm()
    assert engine.ready
    want = ort_run(mlp["onnx"], mlp["inputs"])
    for _ in range(2):  # both workers
        got = engine.execute(mlp["inputs"])
        np.testing.assert_allclose(got["probs"], want["probs"], rtol=FP32_RTOL, atol=FP32_ATOL)
    sessions = [engine._pool.get() for _ in range(2)]
    assert sessions[0].weights is sessions[1].weights


def test_int8_quantized_weights_are_the_ones_written(mlp):
    """--quantize int8 rewrites the weights at compile time: the file holds the int8 tensors, and the
    build computes exactly what the embedded int8 build does."""
    import tvm_autoglm

    external = tvm_autoglm.compile(mlp["onnx"], quantize="int8", weights="external")
    embedded = tvm_autoglm.compile(mlp["onnx"], quantize="int8")
    dtypes = {str(t.dtype) for t in external._weights.tensors.values()}
    assert "int8" in dtypes, dtypes
    got, same = external.run(mlp["inputs"]), embedded.run(mlp["inputs"])
    for name in got:
        np.testing.assert_array_equal(got[name], same[name], err_msg=name)


def test_dynamic_build_with_a_specialized_variant(workdir):
    """Every public function (main and its static variant) gets its own weight list from the one file."""
    import tvm_autoglm
    from tvm_autoglm import runtime

    path = workdir / "extw-dyn" / "mlp_dyn.onnx"
    path.parent.mkdir(exist_ok=True)
    onnx.save(mlp_model(batch="batch", features=FEATURES, hidden=HIDDEN, seed=6), path)
    built = tvm_autoglm.compile(path, dynamic_dims={"batch": (1, 8)}, specialize={"batch": [4]}, weights="external")
    functions = built.manifest["weights"]["functions"]
    assert len(functions) == 2 and "main" in functions, functions
    loaded = runtime.load(built.export(workdir / "extw-dyn" / "mlp.so"))
    for batch in (1, 4, 7):  # 4 runs the static variant
        inputs = {"x": np.random.default_rng(batch).standard_normal((batch, FEATURES)).astype("float32"),
                  "scale": np.array([0.5], dtype="float32")}
        want = ort_run(path, inputs)
        got = loaded.run(inputs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=f"{name} batch {batch}")
