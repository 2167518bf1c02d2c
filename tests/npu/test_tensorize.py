"""The TensorIntrin route (the npu-sim default): init / block-GEMM / epilogue intrinsics, models through it, and the 16x16x16 tile intrinsic (the comparison)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvm_autoglm.npu import build, tensorize
from tvm_autoglm.npu.codegen import MatmulShape
from tvm_autoglm.npu.config import machine_from
from tvm_autoglm.npu.counters import global_counters
from tvm_autoglm.npu.tiling import best_config
from tvm_autoglm.npu.tensorize import BlockConfig, block_kernel, config_words, fits_block, time_blocks

MACHINE = machine_from(None)


def _matmul(m, n, k, in_dtype, acc_dtype):
    @T.prim_func(s_tir=True)
    def mm(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (m, k), in_dtype)
        B = T.match_buffer(b, (k, n), in_dtype)
        C = T.match_buffer(c, (m, n), acc_dtype)
        for i, j, kk in T.grid(m, n, k):
            with T.sblock("C"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                with T.init():
                    C[vi, vj] = T.cast(0, acc_dtype)
                C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], acc_dtype) * T.cast(B[vk, vj], acc_dtype)

    return mm


def _run(mod, *arrays):
    build.global_library()
    lib = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib["mm"](*tensors)
    return tensors[-1].numpy()


def test_tensorized_int8_matmul_bit_exact_and_counted():
    m, n, k = 32, 48, 64
    mod = tensorize.tensorize_matmul(_matmul(m, n, k, "int8", "int32").with_attr("global_symbol", "mm"), "int8")
    assert "npu_gemm_tile" in mod.script()
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    counters = global_counters()
    counters.reset()
    out = _run(mod, a, b, np.zeros((m, n), np.int32))
    np.testing.assert_array_equal(out, a.astype(np.int32) @ b.astype(np.int32))
    snap = counters.snapshot()
    assert snap["macs"] == m * n * k and snap["ops_executed"] == (m // 16) * (n // 16) * (k // 16)
    # one tile per op, no overlap: the program route is several times faster on the same shape
    program_cycles = best_config(MatmulShape(1, m, n, k, False, "int8", "int8", "int32"), machine_from(None))[1]
    assert snap["total_cycles"] > 3 * program_cycles


def test_tensorized_fp32_matmul_rounds_operands_to_fp16():
    m = n = k = 32
    mod = tensorize.tensorize_matmul(_matmul(m, n, k, "float32", "float32").with_attr("global_symbol", "mm"), "float32")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = _run(mod, a, b, np.zeros((m, n), np.float32))
    want = a.astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the block intrinsic

def _int8_shape(batch, m, n, k, b_batched=False, bias=False, activation=None):
    return MatmulShape(batch, m, n, k, b_batched, "int8", "int8", "int32", bias=bias, activation=activation)


def _run_block_kernel(a_shape, b_shape, shape, cfg, machine=MACHINE, seed=0, op_id=3):
    """Compile the tensorized kernel of one op, run it on random int8 data; (out, want, counters snapshot)."""
    bias = shape.bias
    out_shape = list(a_shape[:-1]) + [shape.n]
    func = block_kernel("k", a_shape, b_shape, out_shape, shape, cfg, bias, op_id)
    text = func.script()
    assert "npu_gemm_block" in text and "npu_block_begin" in text and "npu_exec" not in text
    assert ("npu_acc_bias" if bias else "npu_acc_zero") in text and ("npu_block_act" in text) == bool(shape.activation)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, a_shape, dtype=np.int8)
    b = rng.integers(-128, 128, b_shape, dtype=np.int8)
    bias_v = rng.integers(-5000, 5000, (shape.n,), dtype=np.int32)
    args = [a, b] + ([bias_v] if bias else []) + [config_words(shape, cfg, machine, op_id), np.zeros(out_shape, np.int32)]
    build.global_library()
    lib = tvm.compile(tvm.IRModule({"k": func}), tvm.target.Target({"kind": "llvm"}))
    tensors = [tvm.runtime.tensor(x) for x in args]
    counters = global_counters()
    counters.reset()
    lib["k"](*tensors)
    want = np.matmul(a.astype(np.int32), b.astype(np.int32)) + (bias_v if bias else 0)
    if shape.activation == "relu":
        want = np.maximum(want, 0)
    return tensors[-1].numpy(), want, counters.snapshot()


def _dma(nbytes, machine=MACHINE):
    return machine.latency["dma_setup"] + -(-nbytes // machine.dram_bytes_per_cycle)


def test_block_intrinsic_int8_bit_exact_counted_and_replayed():
    """Batched A, shared B, bias, M/N/K not multiples of 16 (padded on chip): exact, MACs counted,
    and the compiled kernel's cycles equal the timing-only replay the tile search uses."""
    shape = _int8_shape(3, 37, 45, 70, bias=True)
    cfg = BlockConfig(37, 45, 35, 2)
    got, want, snap = _run_block_kernel([3, 37, 70], [70, 45], shape, cfg)
    np.testing.assert_array_equal(got, want)
    assert snap["errors"] == 0 and snap["macs"] == shape.macs and snap["ops_executed"] == 1
    assert snap["ops"][0]["op_id"] == 3 and snap["total_cycles"] == time_blocks(shape, cfg, MACHINE)


def test_block_intrinsic_batched_weight_bit_exact():
    shape = _int8_shape(4, 32, 16, 48, b_batched=True)
    got, want, snap = _run_block_kernel([2, 2, 32, 48], [2, 2, 48, 16], shape, BlockConfig(16, 16, 16, 3))
    np.testing.assert_array_equal(got, want)
    assert snap["macs"] == shape.macs


def test_one_block_on_idle_core_equals_documented_formula():
    """docs/npu.md, block route, one 32x32x64 int8 block on an idle core: init, LOAD A, LOAD B, GEMM, STORE,
    final sync, nothing overlapping. Zero init is no instruction (the GEMM resets the accumulator); bias init
    is one LOAD broadcasting the bias row over the block (accumulator-typed bytes of the block)."""
    gemm = 2 * 2 * 4 * MACHINE.latency["gemm_tile"]
    tail = _dma(32 * 64) + _dma(64 * 32) + gemm + _dma(32 * 32 * 4) + MACHINE.latency["sync"]
    formulas = {False: tail, True: _dma(32 * 32 * 4) + tail}
    assert formulas == {False: 576, True: 724}  # 84 + 84 + 256 + 148 + 4 (+ 148) with the shipped target file
    cfg = BlockConfig(32, 32, 64, 2)
    for bias, want in formulas.items():
        shape = _int8_shape(1, 32, 32, 64, bias=bias)
        assert time_blocks(shape, cfg, MACHINE) == want
        got, ref, snap = _run_block_kernel([32, 64], [64, 32], shape, cfg)
        np.testing.assert_array_equal(got, ref)
        assert snap["total_cycles"] == want and snap["errors"] == 0
        # the accumulator is never loaded from DRAM: the only accumulator DMA is the bias broadcast
        assert snap["dma_bytes"]["accumulator"] == (32 * 32 * 4 if bias else 0)
    # the ReLU epilogue: one VALU of rows x ceil(cols / 16) vector cycles between the GEMM and the STORE
    relu = _int8_shape(1, 32, 32, 64, bias=True, activation="relu")
    want = formulas[True] + 32 * 2 * MACHINE.latency["vector_row"]
    assert time_blocks(relu, cfg, MACHINE) == want == 788
    got, ref, snap = _run_block_kernel([32, 64], [64, 32], relu, cfg)
    np.testing.assert_array_equal(got, ref)
    assert snap["total_cycles"] == want


def test_int8_bias_relu_epilogue_bit_exact_on_several_cores():
    """Bias init + block GEMMs + ReLU epilogue over padded, batched blocks split across 2 cores."""
    shape = _int8_shape(2, 40, 48, 80, bias=True, activation="relu")
    cfg = BlockConfig(20, 16, 40, 2)
    got, want, snap = _run_block_kernel([2, 40, 80], [80, 48], shape, cfg, machine=MACHINE.with_cores(2))
    np.testing.assert_array_equal(got, want)
    assert snap["errors"] == 0 and snap["macs"] == shape.macs
    assert snap["total_cycles"] == time_blocks(shape, cfg, MACHINE.with_cores(2))


def test_single_row_op_tensorizes_and_unit_n_is_refused():
    """M = 1 (bert's pooler): the unit m loop folds into the outer block and the descs have none either."""
    shape = _int8_shape(1, 1, 64, 48, bias=True, activation="relu")
    got, want, snap = _run_block_kernel([1, 48], [48, 64], shape, BlockConfig(1, 32, 48, 2))
    np.testing.assert_array_equal(got, want)
    assert snap["errors"] == 0 and snap["macs"] == shape.macs
    assert tensorize.best_block_config(_int8_shape(1, 16, 1, 32), MACHINE) is None  # N = 1: program route


def test_weight_panel_reused_across_output_blocks():
    """n-major order: consecutive m blocks of one n block with one k step use the same B panel, loaded once."""
    shape = _int8_shape(1, 128, 32, 64)
    _, _, snap = _run_block_kernel([128, 64], [64, 32], shape, BlockConfig(32, 32, 64, 2))
    assert snap["dma_bytes"]["weight"] == 64 * 32  # the weight panel, once, not once per m block
    assert snap["dma_bytes"]["input"] == 128 * 64


def test_consecutive_blocks_overlap():
    """Two output blocks of one op: the loads of the second overlap the GEMM of the first."""
    one = time_blocks(_int8_shape(1, 32, 32, 64), BlockConfig(32, 32, 64, 2), MACHINE)
    two = {d: time_blocks(_int8_shape(1, 64, 32, 64), BlockConfig(32, 32, 64, d), MACHINE) for d in (1, 2)}
    assert two[2] < 2 * one and two[2] <= two[1]
    # k steps of one block: with depth 2 the next A/B panels load while the GEMM runs
    ksteps = {d: time_blocks(_int8_shape(1, 32, 32, 256), BlockConfig(32, 32, 64, d), MACHINE) for d in (1, 2)}
    assert ksteps[2] < ksteps[1]


def test_more_cores_fewer_cycles():
    shape = _int8_shape(1, 256, 256, 256)
    cfg = BlockConfig(32, 32, 64, 2)
    cycles = [time_blocks(shape, cfg, MACHINE.with_cores(c)) for c in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(cycles, cycles[1:])), cycles
    assert cycles[0] / cycles[2] > 3.0
    got, want, snap = _run_block_kernel([64, 96], [96, 64], _int8_shape(1, 64, 64, 96), BlockConfig(16, 32, 32, 2),
                                        machine=MACHINE.with_cores(4))
    np.testing.assert_array_equal(got, want)  # blocks spread over 4 cores: same arithmetic
    assert snap["ops"][0]["cores"] == 4


def test_block_sizes_that_do_not_fit_are_rejected():
    shape = _int8_shape(1, 256, 256, 512)
    big = BlockConfig(256, 256, 512, 2)  # 2 x 256 KiB weight buffers > 256 KiB
    assert not fits_block(shape, big, MACHINE)
    with pytest.raises(ValueError, match="rejected"):
        time_blocks(shape, big, MACHINE)
    assert not fits_block(shape, BlockConfig(48, 256, 512, 1), MACHINE)  # 48 does not divide 256
    assert fits_block(shape, BlockConfig(64, 128, 256, 2), MACHINE)


def test_tensorize_route_on_bert_gemms_no_worse_than_program_route():
    """The block route's searched cycles on the bert-base int8 GEMMs (attention scores / context included:
    K = 64 / 128, where the on-chip init and the weight-panel reuse matter) vs the program route's."""
    total = {"program": 0, "tensorize": 0}
    for batch, m, n, k, b_batched in ((1, 128, 768, 768, False), (1, 128, 3072, 768, False), (1, 128, 768, 3072, False),
                                      (12, 128, 128, 64, True), (12, 128, 64, 128, True)):
        shape = _int8_shape(batch, m, n, k, b_batched=b_batched)
        program = best_config(shape, MACHINE)[1]
        block = tensorize.best_block_config(shape, MACHINE)[1]
        assert block <= 1.005 * program, (shape, block, program)
        assert shape.macs / (block * MACHINE.macs_per_cycle_per_core) > 0.95
        total["program"] += program
        total["tensorize"] += block
    assert total["tensorize"] <= total["program"], total


# ---------------------------------------------------------------- models on the default route

RTOL, ATOL = 1e-2, 1e-2  # as tests/npu/test_compile.py: fp16 operands, fp32 accumulation


def _dense_act_model(activation: str):
    """x (1, 24, 32) @ w (32, 48) + b, then ReLU or GELU (erf idiom, as exported models write it)."""
    from _onnx_builders import make_model
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 48)) * 0.2).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(48) * 0.2).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["h"])]
    if activation == "relu":
        nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    else:
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))]
        nodes += [helper.make_node("Div", ["h", "sqrt2"], ["g0"]), helper.make_node("Erf", ["g0"], ["g1"]),
                  helper.make_node("Add", ["g1", "one"], ["g2"]), helper.make_node("Mul", ["h", "g2"], ["g3"]),
                  helper.make_node("Mul", ["g3", "half"], ["y"])]
    return make_model(nodes, {"x": [1, 24, 32]}, {"y": [1, 24, 48]}, inits, name=f"dense_{activation}")


def _assert_all_tensorized(compiled, min_ops):
    """Every NPU op took the tensorize route: its kernel calls the init, block and (if any) epilogue
    intrinsics' externs, and no program-route npu_exec."""
    from tvm_autoglm.npu.partition import npu_ops

    ops = npu_ops(compiled.build.mod)
    assert len(ops) >= min_ops and {op["route"] for op in ops} == {"tensorize"}, ops
    for op in ops:
        text = compiled.build.mod[op["kernel"]].script()
        assert "npu_gemm_block" in text and "npu_block_end" in text and "npu_exec" not in text
        assert ("npu_acc_bias" if op["bias"] else "npu_acc_zero") in text
        assert ("npu_block_act" in text) == bool(op["activation"])
    return ops


def _assert_counted(compiled, ops, inputs):
    from tvm_autoglm.npu.report import collect

    report = collect(compiled._session, inputs)
    assert report["errors"] == 0 and report["macs"] == sum(op["macs"] for op in ops)
    ran = {op["op_id"]: op["cycles"] for op in report["ops"]}
    assert all(ran[op["op_id"]] == op["estimated_cycles"] for op in ops)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matmul_bias_activation_on_the_tensorize_route(activation):
    """matmul + bias + ReLU / GELU: one NPU op on the tensorize route (bias init and activation epilogue
    intrinsics), no fallback to the program route; matches onnxruntime."""
    import tvm_autoglm
    from tvm_autoglm.npu.settings import with_npu
    from tvm_autoglm.targets import load_target

    from .models import reference

    model = _dense_act_model(activation)
    compiled = tvm_autoglm.compile(model, target=with_npu(load_target("npu-sim"), route="tensorize"), opt_level=2)
    (op,) = _assert_all_tensorized(compiled, 1)
    assert op["bias"] and op["activation"] == activation and "route_note" not in op
    assert op["intrinsics"][2].startswith(f"npu_act_{activation}_")
    x = np.random.default_rng(1).standard_normal((1, 24, 32)).astype(np.float32)
    np.testing.assert_allclose(compiled.run(x=x)["y"], reference(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)
    _assert_counted(compiled, [op], {"x": x})


def test_default_route_is_tensorize():
    import json
    from pathlib import Path

    from tvm_autoglm.npu.settings import DEFAULT_ROUTE, default_settings

    target = json.loads((Path(__file__).resolve().parents[2] / "targets" / "npu-sim.json").read_text())
    assert target["npu"]["route"] == "tensorize" == default_settings().route == DEFAULT_ROUTE


def test_tiny_transformer_with_defaults_reaches_the_tile_through_tensorize():
    """Compiled for npu-sim with the defaults: every NPU op (QKV, scores, context, out, FFN with ReLU) reaches
    the NPU through sch.tensorize, outputs match onnxruntime, counted MACs / cycles are the placed ops'.
    The program route stays selectable."""
    import tvm_autoglm
    from tvm_autoglm.npu.settings import with_npu
    from tvm_autoglm.npu.partition import npu_ops
    from tvm_autoglm.targets import load_target

    from .models import reference, transformer_block

    model = transformer_block()
    compiled = tvm_autoglm.compile(model, target="npu-sim", opt_level=3)
    ops = _assert_all_tensorized(compiled, 6)
    assert any(op["activation"] == "relu" for op in ops)
    x = np.random.default_rng(0).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    np.testing.assert_allclose(compiled.run(x=x)["y"], reference(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)
    _assert_counted(compiled, ops, {"x": x})
    program = tvm_autoglm.compile(model, target=with_npu(load_target("npu-sim"), route="program"), opt_level=3)
    assert {op["route"] for op in npu_ops(program.build.mod)} == {"program"}
    np.testing.assert_allclose(program.run(x=x)["y"], compiled.run(x=x)["y"], rtol=RTOL, atol=ATOL)


def test_tiny_cnn_with_defaults_reaches_the_tile_through_tensorize():
    """Conv (im2col) + bias + ReLU, Gemm + bias + ReLU, Gemm + bias: all tensorized by default; matches onnxruntime."""
    import tvm_autoglm

    from .models import reference, tiny_cnn

    model = tiny_cnn()
    compiled = tvm_autoglm.compile(model, target="npu-sim", opt_level=3)
    ops = _assert_all_tensorized(compiled, 3)
    assert {op["kind"] for op in ops} == {"conv2d", "matmul"} and sum(op["activation"] == "relu" for op in ops) == 2
    x = np.random.default_rng(2).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    np.testing.assert_allclose(compiled.run(x=x)["y"], reference(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)
    _assert_counted(compiled, ops, {"x": x})
