"""The lean runtime: run an exported artifact with only the TVM runtime and numpy.

Nothing on this import path pulls in onnx, onnxruntime, xgboost or the
compiler passes, so a deployment image needs just ``apache-tvm``,
``apache-tvm-ffi`` and ``numpy``.
"""

from .inputs import drop_frozen_inputs, example_inputs, read_inputs, validate_inputs
from .manifest import read_manifest, sha256_file
from .session import Session, resolve_artifact, summarize


def load(path) -> Session:
    """Load a ``.so`` (with its manifest beside it) or a ``.glm`` package."""
    return Session.open(path)


__all__ = ["Session", "drop_frozen_inputs", "example_inputs", "load", "read_inputs", "read_manifest", "resolve_artifact", "sha256_file", "summarize", "validate_inputs"]
