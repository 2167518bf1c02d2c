"""Matmul rule: register-blocked contraction kernels keep parity and are parallel + vectorized.

Tolerance: the rule does not reorder the K sum (each output is still
accumulated over k in order), but erf/gelu and BLAS-side rounding differ, so
rtol=1e-4, atol=1e-4 against numpy float64 references cast to float32.
"""

import math

import numpy as np
import pytest

import tvm
from tvm import relax, tirx

from tvm_autoglm.schedule_rules import Matmul, apply_default_schedules
from tvm_autoglm.schedule_rules._common import vector_bits
from tvm_autoglm.schedule_rules.matmul import choose_tile

from sched_helpers import assert_parallel_vectorized, build_fused, prim_funcs, run, workspace_allocations

RTOL = ATOL = 1e-4
rng = np.random.default_rng(0)


def _schedule_only(mod, target, name_part):
    funcs = {n: f for n, f in prim_funcs(mod).items() if name_part in n}
    assert funcs, prim_funcs(mod).keys()
    out = {}
    for name, func in funcs.items():
        sch = Matmul().apply(func, target, False)
        assert sch is not None, f"Matmul rule declined {name}"
        out[name] = sch.mod["main"]
    return out


def test_dense_bias_gelu(target):
    w = rng.standard_normal((64, 96)).astype("float32")
    b = rng.standard_normal(96).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.gelu(relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(b))),
        {"x": (1, 32, 64)},
    )
    for func in _schedule_only(mod, target, "matmul").values():
        assert_parallel_vectorized(func)
    x = rng.standard_normal((1, 32, 64)).astype("float32")
    got = run(apply_default_schedules(mod, target), target, [x])
    pre = x.astype("float64") @ w + b
    ref = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
    np.testing.assert_allclose(got, ref.astype("float32"), rtol=RTOL, atol=ATOL)


def test_tile_accumulators_are_not_workspace_allocations(target):
    # The register tile (with its fused epilogue, and without one) must lower to a stack
    # array, not a TVMBackendAllocWorkspace call per parallel task; a packed weight panel
    # (several KiB) may still come from the workspace.
    w = rng.standard_normal((64, 96)).astype("float32")
    for body in (lambda x: relax.op.nn.relu(relax.op.matmul(x, relax.const(w))), lambda x: relax.op.matmul(x, relax.const(w))):
        mod = build_fused(body, {"x": (1, 32, 64)})
        for func in _schedule_only(mod, target, "matmul").values():
            lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
            small = [n for n in workspace_allocations(lib) if n < 1024]
            assert small == [], f"tile buffers of {small} bytes are runtime workspace allocations"


def test_batch_matmul_and_transposed_operand(target):
    # q @ k^T as attention writes it: the transpose may be fused into the kernel (NT form).
    mod = build_fused(
        lambda q, k: relax.op.matmul(q, relax.op.permute_dims(k, [0, 1, 3, 2])),
        {"q": (1, 3, 16, 8), "k": (1, 3, 24, 8)},
    )
    scheduled = apply_default_schedules(mod, target)
    matmuls = [f for n, f in prim_funcs(scheduled).items() if "matmul" in n]
    assert matmuls and all(f.attrs["tirx.is_scheduled"] for f in matmuls)
    for func in matmuls:
        assert_parallel_vectorized(func)
    q = rng.standard_normal((1, 3, 16, 8)).astype("float32")
    k = rng.standard_normal((1, 3, 24, 8)).astype("float32")
    got = run(scheduled, target, [q, k])
    np.testing.assert_allclose(got, q @ k.transpose(0, 1, 3, 2), rtol=RTOL, atol=ATOL)


def test_matmul_without_epilogue_odd_sizes(target):
    # 20 and 36: no tile divides evenly into 3 vectors of 8; exercise fallbacks.
    mod = build_fused(lambda a, b: relax.op.matmul(a, b), {"a": (20, 12), "b": (12, 36)})
    a = rng.standard_normal((20, 12)).astype("float32")
    b = rng.standard_normal((12, 36)).astype("float32")
    got = run(apply_default_schedules(mod, target), target, [a, b])
    np.testing.assert_allclose(got, a @ b, rtol=RTOL, atol=ATOL)


def test_conv2d_relu(target):
    w = rng.standard_normal((8, 4, 3, 3)).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w), padding=1)), {"x": (1, 4, 10, 16)}
    )
    for func in _schedule_only(mod, target, "conv2d").values():
        assert_parallel_vectorized(func)
    x = rng.standard_normal((1, 4, 10, 16)).astype("float32")
    got = run(apply_default_schedules(mod, target), target, [x])
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 8, 10, 16))
    for ry in range(3):
        for rx in range(3):
            ref += np.einsum("fc,nchw->nfhw", w[:, :, ry, rx], xp[:, :, ry : ry + 10, rx : rx + 16])
    np.testing.assert_allclose(got, np.maximum(ref, 0).astype("float32"), rtol=RTOL, atol=ATOL)


def test_tile_choice_fits_registers():
    # AVX2: 16 ymm registers -> 4 rows x 3 vectors (12 accumulators + 3 loads + 1 broadcast).
    assert choose_tile(128, 3072, 8, 16) == (4, 3, 8)
    # AVX-512: 32 zmm registers allow a taller tile.
    mr, nv, lane = choose_tile(128, 3072, 16, 32)
    assert lane == 16 and mr * nv + nv + 1 <= 32 and mr * nv > 12


def test_vector_width_from_target():
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})) == 256
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})) == 512


def test_avx512_target_uses_16_lanes():
    """Cross-target schedule: the vector loop is 16 wide (not run: this host has no AVX-512)."""
    avx512 = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 4})
    mod = build_fused(lambda a, b: relax.op.matmul(a, b), {"a": (32, 64), "b": (64, 96)})
    (func,) = _schedule_only(mod, avx512, "matmul").values()
    extents = []

    def _visit(node):
        if isinstance(node, tirx.For) and node.kind == tirx.ForKind.VECTORIZED:
            extents.append(int(node.extent))

    import tvm_ffi

    tvm_ffi.structural_walk(func.body, (tirx.For, _visit), order="post")
    assert 16 in extents, extents


def test_rule_declines_non_contraction(target):
    mod = build_fused(lambda x: relax.op.nn.softmax(x, axis=-1), {"x": (4, 16)})
    for func in prim_funcs(mod).values():
        assert Matmul().apply(func, target, False) is None


def test_contraction_to_a_scalar_is_declined_not_a_rule_error():
    """einsum "i,i" (an inner product: no output axis) made the Matmul rule index an empty output; regression
    from the conformance tier under strict rules. The rule declines, and the result matches float64 numpy."""
    import numpy as np
    from _onnx_builders import make_model
    from onnx import helper

    import tvm_autoglm

    model = make_model([helper.make_node("Einsum", ["x", "y"], ["z"], equation="i,i")], {"x": [37], "y": [37]}, {"z": None}, opset=12)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(37).astype("float32"), rng.standard_normal(37).astype("float32")
    got = tvm_autoglm.compile(model, target="cpu-x86-avx2", opt_level=3).run(x=x, y=y)["z"]
    np.testing.assert_allclose(got, np.dot(x.astype("float64"), y.astype("float64")), rtol=1e-5, atol=1e-5)
