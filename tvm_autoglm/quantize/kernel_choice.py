"""Which packed CPU kernel a quantized matmul gets, asked of the target (never the host).

Kept apart from the packing modules: asking needs the backend registry, which imports
the schedule rules, which import the packing layouts; here the question sits above
both, so the import graph stays acyclic.
"""

from __future__ import annotations


def use_bf16_kernel(spec) -> bool:
    """Whether ``spec`` (a TargetSpec) gets the packed ``vdpbf16ps`` kernel: a CPU backend that packs weights,
    on a target whose mcpu has AVX512-BF16 (asked of the target, never the host). ``--quantize bf16`` and
    ``auto``'s bf16 layers both ask."""
    from ..backends import for_target
    from ..targets import cpu_has_feature
    from .cpu_features import BF16_FEATURE

    return bool(for_target(spec).packs_int8) and cpu_has_feature(spec, BF16_FEATURE)
