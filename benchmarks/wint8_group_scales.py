"""Would per-group int8 scales fix what per-channel scales get wrong on a decoder? Measured, not guessed.

Runs the ``--quantize wint8`` budget's own measurement (one onnxruntime session, the reference
batch of ``wint8_build.decoder_reference``: seeded prompts continued by fp32's greedy tokens)
with every layer's weight rounded per output channel, then per group of G rows of K, and
prints the worst-row logit error (1 - min cosine) of each: all layers int8, and all but the
first layer's attention projection (the most sensitive one on the zoo decoders).

    python benchmarks/wint8_group_scales.py --model gpt-neox-small-cache.onnx --groups 128 64 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fake_quantized_groups(w: np.ndarray, group: int | None) -> np.ndarray:
    """``W[K, N]`` rounded to int8 with one scale per output channel (``group`` None) or per ``group`` rows of K."""
    from tvm_autoglm.quantize import wint8_kernel

    k, n = w.shape
    if group is None or k % group:
        q, s = wint8_kernel.quantize_per_channel(w)
        return (q * s).astype(np.float32)
    wg = w.reshape(k // group, group, n)
    amax = np.abs(wg).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / 127, 1)
    return (np.clip(np.rint(wg / scale), -127, 127) * scale).reshape(k, n).astype(np.float32)


def main() -> int:
    import onnx

    from tvm_autoglm.generate.layout import detect
    from tvm_autoglm.quantize import weight_only_budget, wint8_build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a decoder with a KV cache (auto-glm zoo ... --with-cache)")
    parser.add_argument("--groups", type=int, nargs="*", default=[128, 64, 32])
    parser.add_argument("--max-context", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    proto = onnx.load(args.model)
    layers = weight_only_budget.onnx_layers(proto)
    probe = weight_only_budget.OrtProbe(proto, layers, args.threads)
    _, make_feeds, outputs = wint8_build.decoder_reference(proto, detect(proto), args.max_context)
    probe.measure_on(make_feeds(probe.run), outputs)
    names = [layer.node for layer in layers]
    for group in [None, *args.groups]:
        for node, layer in probe.by_node.items():
            w = probe.weights[probe.input_of[node]]
            q = fake_quantized_groups(w.T if layer.transposed else w, group)
            probe._quantized[node] = np.ascontiguousarray(q.T if layer.transposed else q)
        label = "per channel" if group is None else f"per {group} rows"
        print(f"{label:14s} all {len(names)} layers int8: {probe.error(names):.4f}   "
              f"all but {names[0]}: {probe.error(names[1:]):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
