"""What the CPU rules and passes choose for AVX-512 targets, compiled and inspected, never run.

The other rule tests pin AVX2 (every build box runs it); these check the 16-lane / 32-register
choices from any host, AVX2 ones included, by compiling for ``cpu-x86-avx512`` (Cascade Lake,
VNNI) and ``cpu-znver5``. Expectations are derived from the target (lanes, VNNI), not copied.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax, tirx
from tvm.target import codegen

from tvm_autoglm import pipeline, zoo
from tvm_autoglm.schedule_rules import DEFAULT_RULES, Matmul, apply_default_schedules, schedule_func
from tvm_autoglm.schedule_rules import _common as C
from tvm_autoglm.schedule_rules.int8_matmul import Int8MatmulAVX2
from tvm_autoglm.targets import load_target

from sched_helpers import assert_parallel_vectorized, build_fused, loop_kinds, prim_funcs

AVX512_TARGETS = ["cpu-x86-avx512", "cpu-znver5"]


@pytest.fixture(scope="module", params=AVX512_TARGETS)
def avx512(request):
    target = load_target(request.param).tvm_target()
    assert C.vector_lanes(target, "float32") == 16 and C.num_vector_registers(target) == 32
    return target


def _vector_extents(func) -> list[int]:
    import tvm_ffi

    loops = []
    tvm_ffi.structural_walk(func.body, (tirx.For, loops.append), order="post")
    return [int(lp.extent) for lp in loops if lp.kind == tirx.ForKind.VECTORIZED and isinstance(lp.extent, tirx.IntImm)]


def test_int8_rule_tensorizes_and_llvm_picks_the_dot_instruction(avx512):
    """The vpmaddwd intrinsic, fused by LLVM with the add into vpdpwssd where VNNI exists."""
    from test_int8_matmul import _kernel

    func, rule = schedule_func(_kernel((64,), 96, 32), avx512, (Int8MatmulAVX2(),) + DEFAULT_RULES)
    assert rule == "Int8MatmulAVX2"
    assert "llvm.x86.avx2.pmadd.wd" in func.script()
    asm = tvm.compile(tvm.IRModule({"main": func}), avx512).mod.inspect_source("asm")
    expected = "vpdpwssd" if codegen.llvm_cpu_has_features(["avx512vnni"], avx512) else "vpmaddwd"
    assert re.search(rf"\b{expected}\b", asm), expected


def test_tiny_resnet_convs_on_avx512():
    """Convs with whole 16-lane vectors of output channels are packed and take the conv path;
    the 8-channel ones (no whole vector) are left to the generic rule; all run parallel + vectorized."""
    from test_conv import _conv_kernels, _is_conv_path

    spec = load_target("cpu-x86-avx512")
    build = pipeline.build_relax(str(zoo.cached("resnet50", "tiny")), spec, 3, zoo.input_shapes("resnet50", "tiny"))
    convs = _conv_kernels(build.mod)
    assert len(convs) >= 10
    lanes = C.vector_lanes(spec.tvm_target(), "float32")
    for name, func in convs.items():
        out_channels = int(func.params[-1].shape[-1])
        assert ("packed" in name) == (out_channels % lanes == 0), (name, out_channels)
        assert _is_conv_path(func) == ("packed" in name), name
        sch = Matmul().apply(func, spec.tvm_target(), False)
        assert sch is not None, name
        assert_parallel_vectorized(sch.mod["main"])
        if "packed" in name:
            assert lanes in _vector_extents(sch.mod["main"]), name


def test_window_width_and_channels_merge_on_avx512(avx512):
    """As test_conv's (kx, c) check, with 32 input channels so that C is not the vector width."""
    channels_in, channels_out = 32, 64
    weight = np.random.default_rng(0).standard_normal((3, 3, channels_in, channels_out)).astype("float32")
    mod = build_fused(
        lambda x: relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO")),
        {"x": (1, 9, 9, channels_in)},
    )
    (name,) = [n for n in prim_funcs(mod) if "conv2d" in n]
    scheduled = apply_default_schedules(mod, avx512)[name]
    import tvm_ffi

    loops = []
    tvm_ffi.structural_walk(scheduled.body, (tirx.For, loops.append), order="post")
    extents = [int(lp.extent) for lp in loops if isinstance(lp.extent, tirx.IntImm)]
    assert 3 * channels_in in extents and channels_in not in extents, extents
    assert 16 in _vector_extents(scheduled)
    tvm.compile(scheduled.with_attr("global_symbol", "main"), avx512)


def test_dense_panels_follow_the_avx512_tile():
    """pack_dense_weights' panels are the Matmul rule's AVX-512 tile (16 lanes, 32 registers)."""
    from passes.passes_helpers import dense_mlp as _mlp

    from tvm_autoglm.passes.pack_dense_weights import panel_width

    spec = load_target("cpu-x86-avx512")
    build = pipeline.build_relax(_mlp(), spec, 3)
    assert "pack_dense_weights" in build.passes
    target = spec.tvm_target()
    lanes, nregs = C.vector_lanes(target, "float32"), C.num_vector_registers(target)
    expected = []
    for k, n in ((32, 48), (48, 32)):
        width = panel_width((1, 8, k), n, lanes, nregs)
        assert width is not None and width % lanes == 0
        expected.append((n // width, k, width))
    kernels = {name: f for name, f in prim_funcs(build.mod).items() if "matmul_packed" in name}
    assert len(kernels) == 2, list(prim_funcs(build.mod))
    panels = sorted(tuple(int(d) for d in f.params[1].shape) for f in kernels.values())
    assert panels == sorted(expected), panels
    scheduled = apply_default_schedules(build.mod, target)
    for name, func in prim_funcs(scheduled).items():
        if "matmul_packed" in name:
            assert tirx.ForKind.VECTORIZED in loop_kinds(func) and lanes in _vector_extents(func), name
