"""The pass plan: which of our graph passes run, in which order, per backend and opt level.

One ordered list per backend; each entry is (lowest opt level it runs at, pass
name). ``pass_plan(backend, opt_level)`` is that list cut at the opt level. The
order is the contract between passes, so it is written out here rather than
derived from numbers spread over the pass files:

  * fold_constant / eliminate_common_subexpr first, dead_code_elimination last;
  * npu_offload after the idioms (it folds ``R.nn.gelu`` into the NPU epilogue) and before
    fuse_attention (which would wrap the attention matmuls in a host-only group);
  * decode_attention right after fuse_attention (it reads the fused attention groups of a
    generator's decode function; a no-op for every other model);
  * merge_parallel_matmul before fuse_epilogue (one merged projection gets one epilogue);
  * eliminate_transposes, then the CPU layout passes: convert_layout_nhwc -> winograd_conv ->
    pack_conv_weights (both need NHWC) -> pack_dense_weights (after epilogue fusion and merging);
  * fast_math after every pattern pass (they match the exact ops it rewrites).

Opt levels (README): O0 import + lowering only; O1 constant folding + FuseOps/FuseTIR;
O2 adds the rewrite passes (BN folding, epilogue fusion, idioms, attention); O3 adds
QKV merging and layout changes.
"""

from __future__ import annotations

_COMMON_HEAD = [(1, "fold_constant"), (1, "eliminate_common_subexpr"), (2, "fold_conv_bn"),
                (2, "rewrite_gelu"), (2, "rewrite_layer_norm"), (2, "rewrite_rms_norm")]

PLANS: dict[str, list[tuple[int, str]]] = {
    "cpu": _COMMON_HEAD + [
        (2, "fuse_attention"), (2, "decode_attention"), (3, "merge_parallel_matmul"), (2, "fuse_epilogue"), (3, "eliminate_transposes"),
        (3, "convert_layout_nhwc"), (3, "winograd_conv"), (3, "pack_conv_weights"), (3, "pack_dense_weights"),
        (2, "fast_math"), (1, "dead_code_elimination"),
    ],
    "cuda": _COMMON_HEAD + [
        (2, "fuse_attention"), (3, "merge_parallel_matmul"), (2, "fuse_epilogue"), (3, "eliminate_transposes"),
        (1, "dead_code_elimination"),
    ],
    "npu": _COMMON_HEAD + [
        (0, "npu_offload"),  # at every opt level: an NPU target without offload would be a CPU build
        (2, "fuse_attention"), (3, "merge_parallel_matmul"), (2, "fuse_epilogue"), (3, "eliminate_transposes"),
        (2, "fast_math"), (1, "dead_code_elimination"),
    ],
}


def pass_plan(backend: str, opt_level: int) -> list[str]:
    """The names of the passes ``backend`` runs at ``opt_level``, in order."""
    if backend not in PLANS:
        raise KeyError(f"no pass plan for backend '{backend}' (plans: {', '.join(sorted(PLANS))})")
    return [name for level, name in PLANS[backend] if level <= opt_level]


def passes_for(opt_level: int, backend: str, disabled: tuple[str, ...] = ()) -> list:
    """The ``PassSpec``s ``backend`` runs at ``opt_level``, in order, less ``disabled`` (unknown names are an error)."""
    from .registry import get_pass

    for name in disabled:
        get_pass(name)  # unknown names are an error, not silently ignored
    return [get_pass(name) for name in pass_plan(backend, opt_level) if name not in disabled]
