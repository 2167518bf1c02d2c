"""Constant folding, common-subexpression and dead-code elimination (O1).

Runs first so the rewrite passes see folded weights (a BatchNorm's scale is a
constant only after folding) and again is cheap; the later passes rely on it.
"""

import tvm
from tvm import relax

from .registry import register_pass


@register_pass("fold_constant")
def fold_constant():
    """Fold constant subexpressions (weights transposes, reshapes of constants)."""
    return relax.transform.FoldConstant()


@register_pass("eliminate_common_subexpr")
def eliminate_common_subexpr():
    """Merge identical bindings (repeated shape arithmetic, duplicated casts)."""
    return relax.transform.EliminateCommonSubexpr()


@register_pass("dead_code_elimination")
def dead_code_elimination():
    """Drop bindings whose results nobody uses after rewriting."""
    return _dead_code_elimination


@tvm.transform.module_pass(opt_level=0, name="AutoGLMDeadCodeElimination")
def _dead_code_elimination(mod, _ctx):
    # every public function is an entry: main, and a dynamic build's static variants (main__seq_128)
    entries = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function) and f.attrs and "global_symbol" in f.attrs]
    return relax.transform.DeadCodeElimination(entries or ["main"])(mod)
