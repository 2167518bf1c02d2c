"""Shared torch-side helpers for the zoo builders: seeding, 1-D randomisation, export.

Kept apart from ``zoo/__init__.py`` so importing the zoo's index (names, sizes,
example inputs) never imports torch; only building a model does.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import AutoGLMError

#: ONNX opset per exporter: the TorchScript exporter is mature at 17; the dynamo
#: exporter's onnxscript translation library targets 18.
OPSETS = {"torchscript": 17, "dynamo": 18}

#: A single-file ModelProto must stay below protobuf's 2 GiB limit.
_MAX_INLINE_BYTES = 2_000_000_000


def require_torch():
    """Import torch (and transformers' offline mode) or say how to get it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise AutoGLMError(
            "building zoo models needs torch, transformers and onnxscript",
            hint="pip install -e '.[zoo]'",
        ) from exc
    return torch


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global RNG for model construction without leaking the state."""
    torch = require_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def randomize_1d(module, seed: int) -> int:
    """Give every 1-D float parameter and BatchNorm running stat distinct random values.

    Default initialisation leaves LayerNorm/BatchNorm gammas at 1, betas and
    biases at 0 and running stats at 0/1. Exporters then deduplicate the
    identical tensors (one shared initializer, Identity nodes) and constant
    folding can erase whole ops, so the exported graph stops being the real
    architecture and numerical checks stop exercising those terms. Non-persistent
    buffers (rotary ``inv_freq``, ``position_ids``) are functions of the config,
    not weights, and stay as they are. Returns how many tensors were changed.
    """
    torch = require_torch()
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    changed = 0
    with torch.no_grad():
        tensors = list(module.named_parameters())
        tensors += [(n, b) for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))]
        for name, t in tensors:
            if t.dim() != 1 or not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
            if name.endswith("running_var"):
                value = 0.5 + torch.rand(t.shape, generator=gen, dtype=torch.float32)
            elif name.endswith("weight"):  # norm gammas: around 1 so activations stay sane
                value = 1.0 + 0.1 * noise
            else:  # biases, betas, running means
                value = 0.1 * noise
            t.copy_(value.to(t.dtype))
            changed += 1
    return changed


def export(
    module,
    args: tuple,
    input_names: list[str],
    output_names: list[str],
    exporter: str,
    path: Path,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """Export ``module(*args)`` to one self-contained ONNX file at ``path``.

    ``dynamic_axes`` ({input: {axis: name}}) makes those dims symbolic, the way
    most published ONNX models are exported (dynamic batch and sequence).
    """
    torch = require_torch()
    if exporter not in OPSETS:
        raise AutoGLMError(f"unknown exporter {exporter!r}", hint="use 'dynamo' or 'torchscript'")
    nbytes = sum(p.numel() * p.element_size() for p in module.parameters())
    if nbytes > _MAX_INLINE_BYTES:
        raise AutoGLMError(f"model has {nbytes / 1e9:.1f} GB of weights; the zoo writes single-file ONNX (< 2 GB)")
    module.eval()
    kwargs = dict(
        input_names=input_names,
        output_names=output_names,
        opset_version=OPSETS[exporter],
        dynamo=exporter == "dynamo",
    )
    if exporter == "dynamo":
        kwargs["external_data"] = False
        if dynamic_axes:
            dims = {}
            kwargs["dynamic_shapes"] = {
                name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in dynamic_axes.get(name, {}).items()}
                for name in input_names
            }
    elif dynamic_axes:
        kwargs["dynamic_axes"] = dynamic_axes
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            _quiet_dynamo_export(torch, module, args, str(path), kwargs)
        else:
            torch.onnx.export(module, args, str(path), **kwargs)


def _quiet_dynamo_export(torch, module, args, path, kwargs) -> None:
    """The dynamo exporter prints progress lines to stdout; keep the CLI's output clean."""
    import contextlib as _cl
    import io
    import logging

    buf = io.StringIO()
    # "torchvision is not installed" and onnxscript's "Evaluation failed" while it
    # probes folds are warnings about optional paths, not about this model.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with _cl.redirect_stdout(buf):
            torch.onnx.export(module, args, path, verbose=False, **kwargs)
    except Exception:
        print(buf.getvalue(), end="")
        raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
