"""Session-scoped zoo models for tests, built once into a temporary cache.

Import the fixtures from conftest (``from zoo_fixtures import zoo_build, zoo_dir``)
or directly in a test module. Models are tiny and short (SEQ tokens) so a full
set of six exports takes well under a minute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

SEQ = 16


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """A private model cache for this session (tests never touch ~/.cache)."""
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_build(zoo_dir):
    """``zoo_build(name, exporter, size="tiny", seq=SEQ, batch=1, dynamic=False, seed=0) -> Path``, memoised."""
    pytest.importorskip("torch")
    from tvm_autoglm import zoo

    built: dict[tuple, Path] = {}

    def get(name: str, exporter: str, size: str = "tiny", seq: int = SEQ, batch: int = 1, dynamic: bool = False, seed: int = 0) -> Path:
        key = (name, exporter, size, seq, batch, dynamic, seed)
        if key not in built:
            out = zoo_dir / zoo.cache_name(name, size, seq, batch, exporter, seed, dynamic)
            built[key] = zoo.build(name, size, seq, batch, exporter, output=out, seed=seed, dynamic=dynamic)
        return built[key]

    return get


def ort_outputs(model: onnx.ModelProto | Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model (proto or path) on onnxruntime's CPU provider, outputs in graph order."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)
