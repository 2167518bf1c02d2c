"""``--quantize wint8`` on a RelaxBuild: choose the layers (measured), rewrite every Relax function, fuse again.

Kept apart from the rewrite (``weight_only``) and the measurement (``weight_only_budget``)
so that neither imports the pipeline. The reference the error is measured on is the
build's own cleaned ONNX with seeded example inputs, or, for a generator (whose build is
decode-shaped), the source ONNX on seeded random prompts continued by their own greedy
tokens, as one batch with an empty cache (:func:`decoder_reference`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from ..errors import AutoGLMError, stage_errors
from ..ir_utils import op_histogram
from ..pass_report import PassReport
from ..progress import StageLog
from . import weight_only, weight_only_budget
from .int8 import _FUSION, _fuse, unfused_module

WEIGHT_BYTES = {"wint8": 1, "fp32": 4}


#: generated tokens the decoder reference appends to its prompts (the positions the budget is measured at)
CONTINUATION_TOKENS = 128
#: seeded prompts continued side by side (one batch): the worst row of one sequence is a noisy estimate of
#: the worst row of another (one 32+128-token sequence at budget 0.01 left a different prompt 0.016 off)
SEQUENCES = 3


def decoder_reference(proto, layout, max_context: int, tokens: int = weight_only_budget.PROMPT_TOKENS,
                      new_tokens: int = CONTINUATION_TOKENS, sequences: int = SEQUENCES, seed: int = 0):
    """(proto, feeds, outputs) of a decoder's error measure: ``feeds`` makes the reference batch from the fp32 model.

    ``sequences`` seeded random prompts of ``tokens`` ids, each continued greedily by the
    fp32 model itself (onnxruntime's own cache loop, the prompts as one batch) for
    ``new_tokens`` (at most up to ``max_context``), then fed as one batch with an empty
    cache: its logits rows are teacher-forced decode positions along fp32's own tokens. A
    prompt alone is not enough: on the zoo decoders the worst logit row of a 32-token prompt
    was 0.006 off while later decode positions reached 0.019 (session 10). Only the logits
    are measured.
    """
    from ..generate.reference import presents_as_past, step_feeds
    from ..index_ranges import index_ranges

    ranges = index_ranges(proto)
    vocab = int(ranges.get(layout.input_ids, {}).get("max", 99)) + 1
    tokens = min(tokens, max_context)
    new_tokens = max(0, min(new_tokens, max_context - tokens))
    prompts = np.random.default_rng(seed).integers(0, vocab, (sequences, tokens)).astype(np.int64)

    empty = np.zeros((sequences, layout.kv_heads, 0, layout.head_dim), dtype=layout.dtype)
    no_past = {name: empty for name in layout.past_names()}

    def feeds(run) -> dict:
        ids, past, step = prompts, no_past, prompts
        for _ in range(new_tokens):
            values = run(step_feeds(layout, step, ids.shape[1] - step.shape[1], past))
            step = np.argmax(values[layout.logits][:, -1], axis=-1).astype(np.int64).reshape(-1, 1)
            ids = np.concatenate([ids, step], axis=1)
            past = presents_as_past(layout, values)
        return step_feeds(layout, ids, 0, no_past)

    return proto, feeds, [layout.logits]


def plain_reference(build) -> tuple[object, dict]:
    """(proto, feeds, None) for a non-generator build: its cleaned ONNX, seeded example inputs, every float output."""
    from ..index_ranges import index_ranges
    from ..runtime.inputs import example_inputs

    if build.onnx_model is None:
        raise AutoGLMError("--quantize wint8 needs the build's ONNX model to measure the error against")
    if build.symbolic_dims:
        raise AutoGLMError("--quantize wint8 needs static input shapes (the kernel's rows are fixed); drop --dynamic-dims")
    return build.onnx_model, example_inputs(build.inputs, seed=0, index_ranges=index_ranges(build.onnx_model)), None


def apply_wint8(build, budget: float | None = None, reference=None, log=None):
    """RelaxBuild -> RelaxBuild with the chosen matmuls on the wint8 kernel (manifest ``quantization``: per layer)."""
    log = log or StageLog(enabled=False)
    proto, feeds, outputs = reference if reference is not None else plain_reference(build)
    with log.stage("quantize (wint8: measure layers with onnxruntime)"):
        with stage_errors("--quantize wint8 error measurement (onnxruntime)"):
            choice = weight_only_budget.choose(proto, feeds, budget, threads=os.cpu_count() or 1, outputs=outputs)
    with log.stage("quantize (wint8)"):
        with stage_errors(f"--quantize wint8 on target {build.target.name}"):
            mod = unfused_module(build)
            before = op_histogram(mod)
            start = time.perf_counter()
            mod, sites = weight_only.rewrite(mod, choice["approve"], build.target.tvm_target())
            report = PassReport("quantize_wint8", time.perf_counter() - start, before, op_histogram(mod))
            mod = _fuse(build, mod)
    quantized = sum(site["precision"] == "wint8" for rows in sites.values() for site in rows)
    if not quantized:
        raise AutoGLMError("--quantize wint8: no matmul with a constant 2-D float32 weight could be quantized within the budget",
                           hint="raise --accuracy-budget, or use --quantize none")
    layers = _manifest_rows(choice, sites)
    counts = {p: sum(row["precision"] == p for row in layers) for p in ("wint8", "fp32")}
    quantization = {
        "mode": "wint8", "scales": "per output channel, symmetric (int8 = round(w / (max|w[:, n]| / 127)))",
        "budget": choice["budget"], "measured_error": choice["error"], "error_all_int8": choice.get("error_all_int8"),
        "error_measure": choice.get("measure"), "layers": layers, "counts": counts,
        "weight_bytes": sum(r["weight_bytes"] for r in layers),
        "weight_bytes_fp32": sum(r["weight_shape"][0] * r["weight_shape"][1] * 4 for r in layers),
        "sites_per_function": {name: n for name, rows in sites.items() if (n := sum(s["precision"] == "wint8" for s in rows))},
    }
    note = (f"precision: wint8: {counts['wint8']} matmul layers int8 weights (per-channel scales, fp32 arithmetic), "
            f"{counts['fp32']} fp32; measured error {choice['error']:.2e} within budget {choice['budget']:g}; "
            f"details under manifest 'quantization'")
    passes = [p for p in build.passes if p not in _FUSION] + [report.name] + [p for p in build.passes if p in _FUSION]
    reports = [r for r in build.pass_reports if r.name not in _FUSION] + [report] + [r for r in build.pass_reports if r.name in _FUSION]
    return dataclasses.replace(build, mod=mod, passes=passes, pass_reports=reports, notes=[*build.notes, note], quantization=quantization)


def _manifest_rows(choice: dict, sites: dict[str, list[dict]]) -> list[dict]:
    """One row per ONNX layer measured, plus the build's sites that no layer names (declined or unmeasured: fp32)."""
    built = {}
    for rows in sites.values():
        for site in rows:
            built.setdefault(site["key"], site)
    merged = choice["approve"].merged_into
    rows, seen = [], set()
    for layer, key in zip(choice["layers"], choice["layer_keys"]):
        row = dict(layer)
        site = built.get(key)
        if site is None and key in merged:  # quantized as part of a concatenated weight (merge_parallel_matmul)
            site = built.get(merged[key])
            row["merged_into"] = merged[key]
            seen.add(merged[key])
        if row["precision"] == "wint8" and (site is None or site["precision"] != "wint8"):
            row["precision"] = "fp32"
            row["why_fp32"] = site["declined"] if site and "declined" in site else "not found as a constant matmul weight in the Relax build"
        seen.add(key)
        k, n = row["weight_shape"]
        row["weight_bytes"] = k * n * WEIGHT_BYTES[row["precision"]]
        rows.append(row)
    for key, site in built.items():
        if key not in seen:
            k, n = site["weight_shape"]
            rows.append({"layer": f"(relax matmul {key})", "weight_shape": [k, n], "precision": site["precision"],
                         "why_fp32": site.get("declined", "no ONNX MatMul/Gemm reads this weight directly: not measured"),
                         "weight_bytes": k * n * WEIGHT_BYTES[site["precision"]]})
    return rows


def layer_lines(quantization: dict) -> list[str]:
    """CLI lines: the totals, then one line per layer (precision, shape, and why a layer stayed fp32)."""
    counts = quantization["counts"]
    lines = [f"wint8: {counts['wint8']} layers int8, {counts['fp32']} fp32; weights {quantization['weight_bytes'] / 1e6:.1f} MB "
             f"(fp32 {quantization['weight_bytes_fp32'] / 1e6:.1f} MB); measured error {quantization['measured_error']:.2e} "
             f"(all int8: {quantization['error_all_int8']:.2e}), budget {quantization['budget']:g}"]
    for row in quantization["layers"]:
        k, n = row["weight_shape"]
        why = f"  ({row['why_fp32']})" if row.get("why_fp32") else ""
        alone = f"  error alone {row['error_alone']:.2e}" if "error_alone" in row else ""
        lines.append(f"  {row['precision']:5s} {f'{k}x{n}':>11s}  {row['layer']}{alone}{why}")
    return lines
