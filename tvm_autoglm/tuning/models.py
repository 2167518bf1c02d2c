"""The three reference models the shipped schedules and `make tune` are built for.

The zoo (``tvm_autoglm.zoo``) is the real source; this module only falls back to
building the same architectures with seeded random weights when the zoo is not
available, so tuning never depends on a download. Weights do not change the
kernels' workloads (shapes and fusion do), so schedules tuned on a seeded model
apply to the pretrained one.
"""

from __future__ import annotations

import os
from pathlib import Path

# name -> (zoo name, size, seq, batch, input shapes)
REFERENCE = {
    "bert": ("bert", "base", 128, 1),
    "gpt-neox": ("gpt-neox", "base", 128, 1),  # zoo "base" = pythia-70m
    "resnet50": ("resnet50", "base", None, 1),
}

SHIPPED_NAMES = {"bert": "bert-base-s128", "gpt-neox": "gpt-neox-base-s128", "resnet50": "resnet50-b1"}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "tvm_autoglm" / "tuning-models"


def reference_model(name: str) -> Path:
    """Path to the ONNX file for one of the reference models (zoo first, seeded fallback)."""
    if name not in REFERENCE:
        raise ValueError(f"unknown reference model {name!r}; choose one of {sorted(REFERENCE)}")
    zoo_name, size, seq, batch = REFERENCE[name]
    try:
        from .. import zoo  # type: ignore

        cached = zoo.cached
    except (ImportError, AttributeError):
        cached = None
    if cached is not None:
        return Path(cached(zoo_name, size, seq=seq or 128, batch=batch))
    path = cache_dir() / f"{SHIPPED_NAMES[name]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _export(name, path)
    return path


def _export(name: str, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    if name == "bert":
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig()).eval()
        args = (torch.ones(1, 128, dtype=torch.int64), torch.ones(1, 128, dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
    elif name == "gpt-neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        cfg = GPTNeoXConfig(
            vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
            intermediate_size=2048, rotary_pct=0.25, max_position_embeddings=2048, use_cache=False,
        )
        model = GPTNeoXForCausalLM(cfg).eval()
        args = (torch.ones(1, 128, dtype=torch.int64), torch.ones(1, 128, dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
    else:
        from transformers import ResNetConfig, ResNetModel

        model = ResNetModel(ResNetConfig()).eval()
        args = (torch.randn(1, 3, 224, 224),)
        names = ["pixel_values"]

    class Wrap(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            out = self.inner(*xs, return_dict=False) if name != "resnet50" else self.inner(*xs, return_dict=False)
            return out[0]

    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(Wrap(model), args, str(tmp), input_names=names, output_names=["output"], opset_version=17, dynamo=False)
    # The exporter leaves mask/shape subgraphs the Relax importer cannot type with static
    # shapes; onnxruntime's basic level only constant-folds and removes no-ops (standard ops).
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(path.with_suffix(".fold.onnx"))
    ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
    os.replace(path.with_suffix(".fold.onnx"), path)
    tmp.unlink()
