"""The zoo builds real architectures, reproducibly, with every 1-D weight random.

ORT-vs-torch tolerance: rtol 1e-4, atol 1e-5 (fp32, same math, different
summation order).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from zoo_fixtures import SEQ, ort_outputs, zoo_build, zoo_dir  # noqa: F401  (fixtures)

from tvm_autoglm import zoo
from tvm_autoglm.errors import AutoGLMError

NAMES = list(zoo.MODELS)
EXPORTERS = ["torchscript", "dynamo"]


def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_index_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from tvm_autoglm import zoo\n"
        "print(sorted(zoo.MODELS), zoo.example_inputs('bert', 'tiny', 8)['input_ids'].shape)\n"
        "try:\n    zoo.build('bert', output='/nonexistent/x.onnx')\n"
        "except zoo.AutoGLMError as e:\n    print('ERR', e.one_line())\n"
    )
    # zoo re-exports nothing named AutoGLMError; use the errors module
    code = code.replace("zoo.AutoGLMError", "__import__('tvm_autoglm.errors').errors.AutoGLMError")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "['bert', 'gpt-neox', 'resnet50'] (1, 8)" in out.stdout
    assert "ERR" in out.stdout and "pip install -e '.[zoo]'" in out.stdout


def test_models_index():
    for name, info in zoo.MODELS.items():
        assert info.name == name and info.description and "tiny" in info.sizes and "base" in info.sizes
    assert zoo.MODELS["bert"].inputs == ("input_ids", "attention_mask")
    assert zoo.MODELS["gpt-neox"].inputs == ("input_ids", "attention_mask")
    assert zoo.MODELS["resnet50"].inputs == ("pixel_values",)
    assert zoo.input_shapes("resnet50", "base") == {"pixel_values": [1, 3, 224, 224]}
    assert zoo.input_shapes("bert", "tiny", seq=32, batch=2) == {"input_ids": [2, 32], "attention_mask": [2, 32]}


def test_example_inputs_are_valid_and_seeded():
    a = zoo.example_inputs("bert", "tiny", seq=32, batch=2, seed=3)
    b = zoo.example_inputs("bert", "tiny", seq=32, batch=2, seed=3)
    c = zoo.example_inputs("bert", "tiny", seq=32, batch=2, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input_ids"], c["input_ids"])
    ids, mask = a["input_ids"], a["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (2, 32)
    assert ids.min() >= 0 and ids.max() < 1000
    # right padding: every row starts with ones and ends with at least one zero
    assert (mask[:, 0] == 1).all() and (mask[:, -1] == 0).all()
    assert (np.diff(mask, axis=1) <= 0).all()
    img = zoo.example_inputs("resnet50", "tiny", batch=2)["pixel_values"]
    assert img.dtype == np.float32 and img.shape == (2, 3, 64, 64) and abs(img.std() - 1) < 0.1


def test_bad_arguments_are_clean_errors():
    with pytest.raises(AutoGLMError, match="unknown zoo model 'vit'"):
        zoo.example_inputs("vit")
    with pytest.raises(AutoGLMError, match="no size 'huge'"):
        zoo.input_shapes("bert", "huge")
    with pytest.raises(AutoGLMError, match="unknown exporter"):
        zoo.cached("bert", exporter="tf2onnx")
    with pytest.raises(AutoGLMError, match="positive"):
        zoo.input_shapes("bert", seq=0)


def test_cache_name_encodes_every_argument():
    names = {
        zoo.cache_name("bert", "tiny", 128, 1, "dynamo"),
        zoo.cache_name("bert", "base", 128, 1, "dynamo"),
        zoo.cache_name("bert", "tiny", 64, 1, "dynamo"),
        zoo.cache_name("bert", "tiny", 128, 2, "dynamo"),
        zoo.cache_name("bert", "tiny", 128, 1, "torchscript"),
        zoo.cache_name("bert", "tiny", 128, 1, "dynamo", seed=1),
        zoo.cache_name("bert", "tiny", 128, 1, "dynamo", dynamic=True),
    }
    assert len(names) == 7


def test_cached_reuses_the_file(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("AUTOGLM_CACHE", str(tmp_path))
    path = zoo.cached("resnet50", "tiny", exporter="torchscript")
    assert path.parent == tmp_path and path.name == zoo.cache_name("resnet50", "tiny", 128, 1, "torchscript")
    stamp = path.stat().st_mtime_ns
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cached() rebuilt a model that was in the cache")

    monkeypatch.setattr(zoo, "build", no_rebuild)
    assert zoo.cached("resnet50", "tiny", exporter="torchscript") == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind


def test_same_seed_same_model_other_seed_other_weights(zoo_build, tmp_path):
    first = zoo_build("bert", "torchscript")
    again = zoo.build("bert", "tiny", SEQ, 1, "torchscript", output=tmp_path / "again.onnx")
    other = zoo.build("bert", "tiny", SEQ, 1, "torchscript", output=tmp_path / "other.onnx", seed=1)
    assert first.read_bytes() == again.read_bytes()
    a, c = _initializers(first), _initializers(other)
    assert a.keys() == c.keys()
    assert sum(not np.array_equal(a[k], c[k]) for k in a if a[k].dtype == np.float32) >= len(a) // 2


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NAMES)
def test_export_is_the_architecture_and_matches_torch(zoo_build, name, exporter):
    torch = pytest.importorskip("torch")
    path = zoo_build(name, exporter)
    model = onnx.load(str(path))
    info = zoo.MODELS[name]
    assert [i.name for i in model.graph.input] == list(info.inputs)
    assert [o.name for o in model.graph.output] == list(info.outputs)
    assert model.opset_import[0].version == {"torchscript": 17, "dynamo": 18}[exporter]

    # Every 1-D float weight carries distinct values: nothing the exporter could dedupe or fold away.
    flat = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    vectors = [(n, a) for n, a in flat if a.ndim == 1 and a.size > 1 and a.dtype == np.float32]
    assert vectors, "expected bias / norm vectors among the initializers"
    constant = [n for n, a in vectors if np.all(a == a[0])]
    assert not constant, f"all-equal 1-D initializers: {constant}"

    inputs = zoo.example_inputs(name, "tiny", SEQ, 1)
    got = ort_outputs(path, inputs)
    module = zoo.torch_module(name, "tiny", SEQ, 1)
    with torch.no_grad():
        want = module(*(torch.from_numpy(inputs[k]) for k in info.inputs))
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)
        assert np.isfinite(g).all() and g.std() > 1e-3


def test_cli_zoo_writes_model(tmp_path, capsys):
    pytest.importorskip("torch")
    from tvm_autoglm.cli.main import main

    out = tmp_path / "r.onnx"
    assert main(["zoo", "resnet50", "--size", "tiny", "--batch", "2", "--exporter", "torchscript", "--output", str(out)]) == 0
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 64]
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["zoo", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in zoo.MODELS)
    assert main(["zoo", "nope", "--output", str(out)]) == 2
    assert "unknown zoo model 'nope'" in capsys.readouterr().err
