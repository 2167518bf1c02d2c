"""Fusion: TVM's "zero" pipeline at O1+, LegalizeOps alone at O0.

Its own module, not ``pipeline``'s: the precision rewrites (``quantize``) fuse the
module they rewrite again, and the pipeline calls them.
"""

from __future__ import annotations

import tvm
from tvm import relax


def fuse_module(mod: tvm.IRModule, spec, opt_level: int) -> tvm.IRModule:
    """O1+: TVM's "zero" pipeline (LegalizeOps, FoldConstant, FuseOps, FuseTIR); O0: LegalizeOps only."""
    with spec.tvm_target(), quiet_take_warning():
        if opt_level >= 1:
            return relax.get_pipeline("zero")(mod)
        return relax.transform.LegalizeOps()(mod)


def quiet_take_warning():
    """Legalizing a Gather (FoldConstant, FuseOps, passes that legalize) prints TVM's "Fast mode
    segfaults" warning once per take; the runtime range-checks index inputs instead (manifest
    ``index_ranges``), so drop that line and replay every other native line."""
    from .native_log import FAST_TAKE, quiet_native_stderr

    return quiet_native_stderr(drop=FAST_TAKE)
