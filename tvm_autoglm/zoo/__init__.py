"""A zoo of test models built from architecture configs with seeded random weights.

The compiler needs real-world graphs (what torch's exporters actually emit for
BERT, GPT-NeoX and ResNet-50) without hub downloads, so each model is
constructed in code from its published architecture numbers and exported to
ONNX here. Random but seeded weights make builds reproducible; every 1-D tensor
(norm gammas/betas, biases, BN stats) is randomised too, because default
constants get deduplicated or folded away by the exporters and the graph would
no longer be the real architecture.

Interface decisions (stable; tests and the compiler rely on them):

* bert: inputs ``input_ids``, ``attention_mask`` (int64 [batch, seq]); no
  ``token_type_ids`` (single segment, zeros folded in); outputs
  ``last_hidden_state``, ``pooler_output``. Example masks pad the last quarter.
* gpt-neox: inputs ``input_ids``, ``attention_mask``; output
  ``last_hidden_state``; no KV cache. Example masks pad the last eighth.
* resnet50: input ``pixel_values`` (float32 [batch, 3, H, W]; H = W = 64 tiny,
  224 base; ``seq`` is ignored), output ``logits``.
* exporters: ``torchscript`` = ``torch.onnx.export(dynamo=False, opset 17)``,
  ``dynamo`` = the default exporter at opset 18. Shapes are static unless
  ``dynamic=True`` (symbolic ``batch``/``seq``); always one self-contained file.
* cache: ``$AUTOGLM_CACHE`` or ``~/.cache/tvm_autoglm/zoo``; file names encode
  every argument (``cache_name``).

This module imports neither torch nor transformers: listing models, naming
cache files and generating inputs work in a core install; only ``build`` needs
``pip install -e '.[zoo]'``.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AutoGLMError

EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ModelInfo:
    """One zoo entry: where its builder lives and what it takes and returns."""

    name: str
    module: str
    description: str
    sizes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    uses_seq: bool


def _info(name: str, module: str) -> ModelInfo:
    mod = importlib.import_module(f"{__name__}.{module}")
    return ModelInfo(
        name=name,
        module=module,
        description=mod.DESCRIPTION,
        sizes=tuple(mod.SIZES),
        inputs=tuple(mod.INPUTS),
        outputs=tuple(mod.OUTPUTS),
        uses_seq=name != "resnet50",
    )


#: name -> ModelInfo (description, sizes, input and output names).
MODELS: dict[str, ModelInfo] = {
    "bert": _info("bert", "bert"),
    "gpt-neox": _info("gpt-neox", "gpt_neox"),
    "resnet50": _info("resnet50", "resnet"),
}


def _builder(name: str):
    if name not in MODELS:
        raise AutoGLMError(f"unknown zoo model {name!r}", hint=f"choose one of: {', '.join(MODELS)}")
    return importlib.import_module(f"{__name__}.{MODELS[name].module}")


def _check(name: str, size: str, seq: int, batch: int, exporter: str | None = None):
    mod = _builder(name)
    if size not in mod.SIZES:
        raise AutoGLMError(f"zoo model {name!r} has no size {size!r}", hint=f"choose one of: {', '.join(mod.SIZES)}")
    if int(seq) < 1 or int(batch) < 1:
        raise AutoGLMError(f"seq and batch must be positive, got seq={seq} batch={batch}")
    if exporter is not None and exporter not in EXPORTERS:
        raise AutoGLMError(f"unknown exporter {exporter!r}", hint=f"choose one of: {', '.join(EXPORTERS)}")
    return mod


def input_shapes(name: str, size: str = "tiny", seq: int = 128, batch: int = 1) -> dict[str, list[int]]:
    """Static input shapes of the exported graph, by input name."""
    mod = _check(name, size, seq, batch)
    return {k: list(shape) for k, (shape, _dtype) in mod.input_shapes(size, seq, batch).items()}


def example_inputs(name: str, size: str = "tiny", seq: int = 128, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for a zoo model: token ids in range, padded masks, N(0,1) images."""
    mod = _check(name, size, seq, batch)
    return mod.example_inputs(size, seq, batch, np.random.default_rng(seed))


def torch_module(name: str, size: str = "tiny", seq: int = 128, batch: int = 1, *, seed: int = 0):
    """The eval-mode torch module ``build`` exports (same seed, same weights).

    Its forward takes the inputs positionally in ``MODELS[name].inputs`` order
    and returns the outputs in ``MODELS[name].outputs`` order (a tensor when
    there is one output).
    """
    mod = _check(name, size, seq, batch)
    return mod.make(size, int(seq), int(batch), seed)


def cache_dir() -> Path:
    """$AUTOGLM_CACHE, else ~/.cache/tvm_autoglm/zoo."""
    env = os.environ.get("AUTOGLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tvm_autoglm" / "zoo"


def cache_name(name: str, size: str, seq: int, batch: int, exporter: str, seed: int = 0, dynamic: bool = False) -> str:
    """File name that encodes every build argument, so two builds never share a file."""
    seq_part = f"s{seq}" if MODELS[name].uses_seq else "img"
    dyn = "-dyn" if dynamic else ""
    return f"{name}-{size}-{seq_part}-b{batch}-{exporter}{dyn}-seed{seed}.onnx"


def build(
    name: str,
    size: str = "tiny",
    seq: int = 128,
    batch: int = 1,
    exporter: str = "dynamo",
    output: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    dynamic: bool = False,
) -> Path:
    """Construct the model with seeded random weights and export it to ONNX at ``output``.

    Without ``output`` the file goes to the cache (same as ``cached`` but always
    rebuilt). The file is written to a temporary name and renamed into place,
    so a reader never sees half a model. ``dynamic=True`` exports batch (and
    sequence) as symbolic dims, like most published ONNX files; ``seq`` and
    ``batch`` are then only the trace sizes (batch is traced at >= 2 because
    torch.export specialises dims of size 1).
    """
    mod = _check(name, size, seq, batch, exporter)
    from ._torch import export

    output = Path(output) if output is not None else cache_dir() / cache_name(name, size, seq, batch, exporter, seed, dynamic)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = mod.make(size, int(seq), int(batch), seed)
    import torch

    trace_batch = max(2, int(batch)) if dynamic else int(batch)
    example = mod.example_inputs(size, int(seq), trace_batch, np.random.default_rng(seed))
    args = tuple(torch.from_numpy(example[k]) for k in mod.INPUTS)
    axes = None
    if dynamic:
        named = {0: "batch", 1: "seq"} if MODELS[name].uses_seq else {0: "batch"}
        axes = {k: dict(named) for k in mod.INPUTS}
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        export(model, args, list(mod.INPUTS), list(mod.OUTPUTS), exporter, Path(tmp), dynamic_axes=axes)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a model file is for everyone
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cached(
    name: str,
    size: str = "tiny",
    seq: int = 128,
    batch: int = 1,
    exporter: str = "dynamo",
    *,
    seed: int = 0,
    dynamic: bool = False,
) -> Path:
    """Path of the built model in the cache, building it only if it is not there yet."""
    _check(name, size, seq, batch, exporter)
    path = cache_dir() / cache_name(name, size, seq, batch, exporter, seed, dynamic)
    if path.is_file() and path.stat().st_size > 0:
        return path
    return build(name, size, seq, batch, exporter, output=path, seed=seed, dynamic=dynamic)


def build_with_cache(name: str, size: str = "tiny", output: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Export the causal LM ``name`` (gpt-neox, gpt2, llama) with its KV cache (``zoo/causal_lm.py``).

    Without ``output`` the file goes to the cache, rebuilt only when missing.
    """
    from . import causal_lm

    causal_lm._check(name, size)
    if output is None:
        output = cache_dir() / f"{name}-{size}-causal-lm-with-cache-seed{seed}.onnx"
        if output.is_file() and output.stat().st_size > 0:
            return output
    return causal_lm.export(name, size, output, seed=seed)


__all__ = [
    "build_with_cache",
    "EXPORTERS",
    "MODELS",
    "ModelInfo",
    "build",
    "cache_dir",
    "cache_name",
    "cached",
    "example_inputs",
    "input_shapes",
    "torch_module",
]
