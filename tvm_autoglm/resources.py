"""Refusing work that cannot fit in memory, before the OOM killer decides for us.

Compiling holds the ONNX model, the Relax module with its constants, folded
copies of the weights and the exported library at once. We measured peak RSS at
about 4-5x the ONNX file size for bert-base/large (see benchmarks/RESULTS.md), and
6.6x the weights for a 600 MiB external-data MatMul chain compiled and exported with the
weights embedded (3.2x with ``--weights external``, whose export writes no library blob;
both include the ~0.3 GiB of the interpreter, TVM and LLVM);
``COMPILE_MEMORY_FACTOR`` with ``BASELINE_BYTES`` covers both. External data counts by the
tensors' references (``onnx_external.external_bytes``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AutoGLMError

COMPILE_MEMORY_FACTOR = 6.0
BASELINE_BYTES = 1 << 30  # the interpreter, TVM and LLVM themselves


class OutOfMemoryError(AutoGLMError):
    """The job would need more memory than the machine has available."""


def available_memory() -> int:
    override = os.environ.get("AUTOGLM_AVAILABLE_MEMORY")
    if override:
        return int(float(override))
    import psutil

    return int(psutil.virtual_memory().available)


def check_compile_memory(model_bytes: int, source: str) -> None:
    need = BASELINE_BYTES + int(model_bytes * COMPILE_MEMORY_FACTOR)
    have = available_memory()
    if need > have:
        raise OutOfMemoryError(
            f"{source}: compiling a {model_bytes / 2**30:.2f} GiB model needs about {need / 2**30:.1f} GiB of memory, "
            f"only {have / 2**30:.1f} GiB is available",
            hint="free memory, use a machine with more, or compile a smaller variant",
        )


def model_size(proto, path: Path | None) -> int:
    """Bytes of the model: the proto (graph and inline tensors) plus every tensor it keeps in external data files.

    External tensors count by the lengths their references give (``onnx_external.external_bytes``),
    whatever the data files are called.
    """
    from .onnx_external import external_bytes

    size = max(path.stat().st_size, proto.ByteSize()) if path is not None else proto.ByteSize()
    return size + external_bytes(proto)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
