"""Constant folding, common-subexpression and dead-code elimination (O1).

Runs first so the rewrite passes see folded weights (a BatchNorm's scale is a
constant only after folding) and again is cheap; the later passes rely on it.
"""

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
    return relax.transform.DeadCodeElimination(["main"])
