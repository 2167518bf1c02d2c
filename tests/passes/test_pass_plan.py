"""The pass plan (passes/plan.py) pinned per (backend, opt level).

The expected lists were computed once from the old registry (``stage=`` numbers 10-90 and
``target_kinds``/``opt_level`` on each ``@register_pass``) before the plan replaced them, and
are written here as literals: the move must keep exactly that order and membership."""

from __future__ import annotations

import pytest

from tvm_autoglm.errors import AutoGLMError
from tvm_autoglm.passes import all_passes, passes_for
from tvm_autoglm.passes.plan import PLANS, pass_plan

HEAD = ["fold_constant", "eliminate_common_subexpr", "fold_conv_bn", "rewrite_gelu", "rewrite_layer_norm", "rewrite_rms_norm"]
O1 = ["fold_constant", "eliminate_common_subexpr", "dead_code_elimination"]
EXPECTED = {
    ("cpu", 0): [],
    ("cpu", 1): O1,
    ("cpu", 2): HEAD + ["fuse_attention", "decode_attention", "fuse_epilogue", "fast_math", "dead_code_elimination"],
    ("cpu", 3): HEAD + ["fuse_attention", "decode_attention", "merge_parallel_matmul", "fuse_epilogue", "eliminate_transposes", "convert_layout_nhwc",
                        "winograd_conv", "pack_conv_weights", "pack_dense_weights", "fast_math", "dead_code_elimination"],
    ("cuda", 0): [],
    ("cuda", 1): O1,
    ("cuda", 2): HEAD + ["fuse_attention", "fuse_epilogue", "dead_code_elimination"],
    ("cuda", 3): HEAD + ["fuse_attention", "merge_parallel_matmul", "fuse_epilogue", "eliminate_transposes", "dead_code_elimination"],
    ("npu", 0): ["npu_offload"],
    ("npu", 1): ["fold_constant", "eliminate_common_subexpr", "npu_offload", "dead_code_elimination"],
    ("npu", 2): HEAD + ["npu_offload", "fuse_attention", "fuse_epilogue", "fast_math", "dead_code_elimination"],
    ("npu", 3): HEAD + ["npu_offload", "fuse_attention", "merge_parallel_matmul", "fuse_epilogue", "eliminate_transposes",
                        "fast_math", "dead_code_elimination"],
}


@pytest.mark.parametrize("backend,opt_level", sorted(EXPECTED))
def test_plan_is_the_old_stage_order(backend, opt_level):
    assert pass_plan(backend, opt_level) == EXPECTED[backend, opt_level]
    assert [p.name for p in passes_for(opt_level, backend)] == EXPECTED[backend, opt_level]


def test_every_backend_has_a_plan_and_every_planned_pass_is_registered():
    from tvm_autoglm.backends import BACKENDS

    assert set(PLANS) == set(BACKENDS)
    registered = {p.name for p in all_passes()}
    planned = {name for plan in PLANS.values() for _, name in plan}
    assert planned == registered  # no orphan factory, no plan entry without one
    for plan in PLANS.values():
        names = [name for _, name in plan]
        assert len(names) == len(set(names))


def test_disabled_passes_leave_the_plan_and_unknown_names_are_refused():
    assert "fast_math" not in [p.name for p in passes_for(3, "cpu", ("fast_math",))]
    with pytest.raises(AutoGLMError, match="unknown pass 'no_such_pass'"):
        passes_for(3, "cpu", ("no_such_pass",))


def test_unknown_backend_has_no_plan():
    with pytest.raises(KeyError, match="no pass plan for backend 'tpu'"):
        pass_plan("tpu", 3)
