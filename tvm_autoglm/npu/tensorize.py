"""The TensorIntrin route (npu-sim's default): NPU matmuls reached through ``sch.tensorize``.

An op's kernel is its block loop nest (batch, n blocks, m blocks; k steps inside), with three
blocks per output block, each tensorized by an intrinsic whose impl calls the simulator:

* the **init intrinsic** ``npu_init_{zero|bias}_{bm}x{bn}_{c}``: desc ``C = 0`` or
  ``C[i, j] = Bias[j]``; impl ``npu_acc_zero`` (no instruction: the first GEMM of the block
  resets the accumulator) or ``npu_acc_bias`` (one LOAD broadcasting the bias row into the
  accumulator scratchpad) -- C is never loaded from DRAM;
* the **block intrinsic** ``npu_gemm_{bm}x{bn}x{bk}_{a}{b}{c}`` (one per k step): desc
  ``C += A x B``; impl ``npu_gemm_block``: LOAD A and B sub-panels into rotating buffers (a B
  panel still resident is not loaded again), one GEMM of ceil(bm/16) x ceil(bn/16) x
  ceil(bk/16) 16x16x16 tiles, and the STORE of C after the last k step when the op has no
  epilogue;
* the **epilogue intrinsic** ``npu_act_{relu|gelu|gelu_tanh}_{bm}x{bn}_{c}``: desc
  ``D = act(C)``; impl ``npu_block_act``: the activation on the vector unit, then the STORE.

``npu_block_begin`` / ``npu_block_end`` bracket the nest; the simulator keeps the per-core
engine timelines between the calls of one op, so the loads of the next block overlap the
GEMM of the previous one (``depth`` rotating buffers). docs/npu.md has the cycle rules and
the numbers. The original **tile intrinsic** ``npu_tile_gemm_16x16x16_*``
(``tensorize_matmul``), where every 16x16x16 step is its own NPU op, is kept as the measured
lower bound of what a tile-sized intrinsic can do.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from . import isa
from .config import Machine

INTRINS = {"int8": "npu_tile_gemm_16x16x16_i8i8i32", "float32": "npu_tile_gemm_16x16x16_f16f16f32"}
MAX_BLOCK = {"m": 256, "n": 256, "k": 512}  # as the program route's search
DEPTHS = (1, 2, 3)
_SHORT = {"int8": "i8", "int32": "i32", "float32": "f32", "float16": "f16"}


# ---------------------------------------------------------------- the 16x16x16 tile intrinsic (comparison)

def _make(in_dtype: str, acc_dtype: str, fp: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), in_dtype, offset_factor=1)
        B = T.match_buffer(b, (16, 16), in_dtype, offset_factor=1)
        C = T.match_buffer(c, (16, 16), acc_dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], acc_dtype) * T.cast(B[vk, vj], acc_dtype)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0 = T.int32()
        sa1 = T.int32()
        sb0 = T.int32()
        sb1 = T.int32()
        sc0 = T.int32()
        sc1 = T.int32()
        A = T.match_buffer(a, (16, 16), in_dtype, offset_factor=1, strides=[sa0, sa1])
        B = T.match_buffer(b, (16, 16), in_dtype, offset_factor=1, strides=[sb0, sb1])
        C = T.match_buffer(c, (16, 16), acc_dtype, offset_factor=1, strides=[sc0, sc1])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.call_extern("int32", "npu_gemm_tile", A.access_ptr("r"), B.access_ptr("r"), C.access_ptr("rw"), sa0, sb0, sc0, fp, 0))

    return desc, impl


def register() -> None:
    """Register both tile intrinsics once (idempotent)."""
    for in_dtype, name in INTRINS.items():
        if TensorIntrin.get(name, allow_missing=True) is None:
            acc = "int32" if in_dtype == "int8" else "float32"
            TensorIntrin.register(name, *_make(in_dtype, acc, 0 if in_dtype == "int8" else 1))


def tensorize_matmul(func: tvm.tirx.PrimFunc, dtype: str = "int8", block: str = "C") -> tvm.IRModule:
    """Tile a matmul PrimFunc (M, N, K multiples of 16; operands ``dtype``) by 16 and tensorize the inner tile."""
    register()
    sch = Schedule(func)
    blk = sch.get_sblock(block)
    i, j, k = sch.get_loops(blk)
    io, ii = sch.split(i, [None, 16])
    jo, ji = sch.split(j, [None, 16])
    ko, ki = sch.split(k, [None, 16])
    sch.reorder(io, jo, ko, ii, ji, ki)
    sch.decompose_reduction(blk, ko)
    sch.tensorize(ii, INTRINS[dtype])
    return sch.mod


# ---------------------------------------------------------------- the block intrinsic

@dataclass(frozen=True)
class BlockConfig:
    """One block-route op: block sizes (each divides its dimension) and the prefetch depth."""

    bm: int
    bn: int
    bk: int
    depth: int

    def to_json(self) -> dict:
        return {"mb": self.bm, "nb": self.bn, "kb": self.bk, "depth": self.depth}


def block_intrin_name(bm: int, bn: int, bk: int, a_dtype: str, b_dtype: str, c_dtype: str) -> str:
    return f"npu_gemm_{bm}x{bn}x{bk}_{_SHORT[a_dtype]}{_SHORT[b_dtype]}{_SHORT[c_dtype]}"


def _nest(ind: str, dims: list[tuple[str, int, str]], name: str) -> tuple[list[str], dict]:
    """Loops and block vars of a desc over ``dims`` ((var, extent, kind)): a unit dimension gets no loop
    and index 0 -- in a kernel TVM folds a unit loop into the outer block, so the desc must not have it."""
    real = [(v, e, k) for v, e, k in dims if e > 1]
    idx = {v: (f"v{v}" if e > 1 else "0") for v, e, _ in dims}
    lines = []
    if real:
        lines.append(f"{ind}for {', '.join(v for v, _, _ in real)} in T.grid({', '.join(str(e) for _, e, _ in real)}):")
        ind += "    "
    lines.append(f"{ind}with T.sblock(\"{name}\"):")
    if real:
        lines.append(f"{ind}    {', '.join(f'v{v}' for v, _, _ in real)} = T.axis.remap(\"{''.join(k for _, _, k in real)}\", [{', '.join(v for v, _, _ in real)}])")
    return lines, idx, ind + "    "


def _block_pair(bm, bn, bk, a_dtype, b_dtype, c_dtype):
    nest, x, body = _nest("        ", [("i", bm, "S"), ("j", bn, "S"), ("k", bk, "R")], "update")
    rw = (f"        T.reads(C[0:{bm}, 0:{bn}], A[0:{bm}, 0:{bk}], B[0:{bk}, 0:{bn}])\n"
          f"        T.writes(C[0:{bm}, 0:{bn}])\n")
    desc = (
        "@T.prim_func(s_tir=True)\n"
        "def desc(a: T.handle, b: T.handle, c: T.handle) -> None:\n"
        f'    A = T.match_buffer(a, ({bm}, {bk}), "{a_dtype}", offset_factor=1)\n'
        f'    B = T.match_buffer(b, ({bk}, {bn}), "{b_dtype}", offset_factor=1)\n'
        f'    C = T.match_buffer(c, ({bm}, {bn}), "{c_dtype}", offset_factor=1)\n'
        '    with T.sblock("root"):\n' + rw + "\n".join(nest) + "\n"
        f"{body}C[{x['i']}, {x['j']}] = C[{x['i']}, {x['j']}] + T.Cast(\"{c_dtype}\", A[{x['i']}, {x['k']}]) * T.Cast(\"{c_dtype}\", B[{x['k']}, {x['j']}])\n"
    )
    impl = (
        "@T.prim_func(s_tir=True)\n"
        "def impl(a: T.handle, b: T.handle, c: T.handle) -> None:\n"
        "    sa0 = T.int32()\n    sa1 = T.int32()\n    sb0 = T.int32()\n    sb1 = T.int32()\n    sc0 = T.int32()\n    sc1 = T.int32()\n"
        + _strided("A", f"{bm}, {bk}", a_dtype, ["sa0", "sa1"]) + _strided("B", f"{bk}, {bn}", b_dtype, ["sb0", "sb1"])
        + _strided("C", f"{bm}, {bn}", c_dtype, ["sc0", "sc1"])
        + '    with T.sblock("root"):\n' + rw
        + '        T.evaluate(T.call_extern("int32", "npu_gemm_block", A.access_ptr("r"), B.access_ptr("r"), C.access_ptr("rw"), '
        'T.Cast("int64", A.elem_offset), T.Cast("int64", B.elem_offset), T.Cast("int64", C.elem_offset), '
        f'T.Cast("int32", sa0), T.Cast("int32", sb0), T.Cast("int32", sc0), T.int32({bm}), T.int32({bn}), T.int32({bk})))\n'
    )
    return _from_source(desc), _from_source(impl)


def register_block(bm: int, bn: int, bk: int, a_dtype: str = "int8", b_dtype: str = "int8", c_dtype: str = "int32") -> str:
    """Register (once) the block intrinsic of this size and dtypes; returns its name."""
    name = block_intrin_name(bm, bn, bk, a_dtype, b_dtype, c_dtype)
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *_block_pair(bm, bn, bk, a_dtype, b_dtype, c_dtype))
    return name


# ---------------------------------------------------------------- init and epilogue intrinsics

def _act_expr(act: str, x: str, acc: str) -> str:
    """TVMScript of the activation on ``x``: the same text in the kernel and in the epilogue intrinsic's desc
    (tensorize matches them structurally); the simulator's VALU computes it (erf / tanh form, as ONNX)."""
    c = lambda v: f"T.{acc}({v})"  # noqa: E731
    if act == "relu":
        return f"T.max({x}, {c(0)})"
    if act == "gelu":
        return f"{c(0.5)} * {x} * ({c(1)} + T.erf({x} * {c(0.7071067811865476)}))"
    if act == "gelu_tanh":
        return f"{c(0.5)} * {x} * ({c(1)} + T.tanh({c(0.7978845608028654)} * ({x} + {c(0.044715)} * {x} * {x} * {x})))"
    raise ValueError(f"no NPU epilogue for activation {act!r}")


def _from_source(src: str) -> tvm.tirx.PrimFunc:
    return tvm.script.from_source(src, extra_vars={"T": T})


def _strided(name: str, shape: str, dtype: str, strides: list[str]) -> str:
    return f"    {name} = T.match_buffer({name.lower()}, ({shape}), \"{dtype}\", offset_factor=1, strides=[{', '.join(strides)}])\n"


def init_intrin_name(bm: int, bn: int, c_dtype: str, bias: bool) -> str:
    return f"npu_init_{'bias' if bias else 'zero'}_{bm}x{bn}_{_SHORT[c_dtype]}"


def register_init(bm: int, bn: int, c_dtype: str, bias: bool) -> str:
    """The init intrinsic of decompose_reduction's init block: desc ``C = 0`` or ``C[i, j] = Bias[j]``; impl one
    ``npu_acc_zero`` (no instruction: the block's first GEMM resets the accumulator) or ``npu_acc_bias`` (one
    LOAD broadcasting the bias row over the block in the accumulator scratchpad). C is never loaded from DRAM."""
    name = init_intrin_name(bm, bn, c_dtype, bias)
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    args = "c: T.handle, bias: T.handle" if bias else "c: T.handle"
    nest, x, body = _nest("        ", [("i", bm, "S"), ("j", bn, "S")], "init")
    value = f"Bias[{x['j']}]" if bias else f"T.{c_dtype}(0)"
    reads = f"T.reads(Bias[0:{bn}])" if bias else "T.reads()"
    bias_buf = f'    Bias = T.match_buffer(bias, ({bn},), "{c_dtype}", offset_factor=1)\n' if bias else ""
    desc = (
        "@T.prim_func(s_tir=True)\n"
        f"def desc({args}) -> None:\n"
        f'    C = T.match_buffer(c, ({bm}, {bn}), "{c_dtype}", offset_factor=1)\n'
        + bias_buf
        + '    with T.sblock("root"):\n'
        f"        {reads}\n"
        f"        T.writes(C[0:{bm}, 0:{bn}])\n"
        + "\n".join(nest) + "\n"
        f"{body}T.reads({f'Bias[{x[chr(106)]}]' if bias else ''})\n"
        f"{body}T.writes(C[{x['i']}, {x['j']}])\n"
        f"{body}C[{x['i']}, {x['j']}] = {value}\n"
    )
    offs = f'T.Cast("int64", C.elem_offset), T.Cast("int32", sc0), T.int32({bm}), T.int32({bn})'
    call = (f'T.call_extern("int32", "npu_acc_bias", Bias.access_ptr("r"), {offs})' if bias
            else f'T.call_extern("int32", "npu_acc_zero", {offs})')
    impl = (
        "@T.prim_func(s_tir=True)\n"
        f"def impl({args}) -> None:\n"
        "    sc0 = T.int32()\n    sc1 = T.int32()\n"
        + _strided("C", f"{bm}, {bn}", c_dtype, ["sc0", "sc1"])
        + bias_buf
        + '    with T.sblock("root"):\n'
        f"        {reads}\n"
        f"        T.writes(C[0:{bm}, 0:{bn}])\n"
        f"        T.evaluate({call})\n"
    )
    TensorIntrin.register(name, _from_source(desc), _from_source(impl))
    return name


def act_intrin_name(bm: int, bn: int, c_dtype: str, act: str) -> str:
    return f"npu_act_{act}_{bm}x{bn}_{_SHORT[c_dtype]}"


def register_act(bm: int, bn: int, c_dtype: str, act: str) -> str:
    """The epilogue intrinsic, placed on the output block after its last k step: desc ``D = act(C)``; impl one
    ``npu_block_act``: a VALU of the activation on the block still in the accumulator, then its STORE into D."""
    name = act_intrin_name(bm, bn, c_dtype, act)
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    code = isa.ALU[act]
    nest, x, body = _nest("        ", [("i", bm, "S"), ("j", bn, "S")], "act")
    rw = (f"        T.reads(C[0:{bm}, 0:{bn}])\n"
          f"        T.writes(D[0:{bm}, 0:{bn}])\n")
    desc = (
        "@T.prim_func(s_tir=True)\n"
        "def desc(c: T.handle, d: T.handle) -> None:\n"
        f'    C = T.match_buffer(c, ({bm}, {bn}), "{c_dtype}", offset_factor=1)\n'
        f'    D = T.match_buffer(d, ({bm}, {bn}), "{c_dtype}", offset_factor=1)\n'
        '    with T.sblock("root"):\n' + rw + "\n".join(nest) + "\n"
        f"{body}D[{x['i']}, {x['j']}] = {_act_expr(act, f'C[{x[chr(105)]}, {x[chr(106)]}]', c_dtype)}\n"
    )
    impl = (
        "@T.prim_func(s_tir=True)\n"
        "def impl(c: T.handle, d: T.handle) -> None:\n"
        "    sc0 = T.int32()\n    sc1 = T.int32()\n    sd0 = T.int32()\n    sd1 = T.int32()\n"
        + _strided("C", f"{bm}, {bn}", c_dtype, ["sc0", "sc1"]) + _strided("D", f"{bm}, {bn}", c_dtype, ["sd0", "sd1"])
        + '    with T.sblock("root"):\n' + rw
        + f'        T.evaluate(T.call_extern("int32", "npu_block_act", D.access_ptr("w"), T.Cast("int64", D.elem_offset), '
        f'T.Cast("int32", sd0), T.int32({bm}), T.int32({bn}), T.int32({code})))\n'
    )
    TensorIntrin.register(name, _from_source(desc), _from_source(impl))
    return name


def _esz(shape) -> int:
    return 1 if shape.mode == isa.MODE_INT8 else 2


def fits_block(shape, cfg: BlockConfig, machine: Machine) -> bool:
    """Sizes divide the op, and depth input/weight buffers + two accumulators fit the scratchpads.

    bn = 1 or bk = 1 (an op with N = 1 or K = 1) is refused: TVM keeps such a unit loop inside the block
    to tensorize, which the descs (``_nest``) do not model; those ops take the program route."""
    if shape.m % cfg.bm or shape.n % cfg.bn or shape.k % cfg.bk or cfg.depth < 1 or cfg.bn < 2 or cfg.bk < 2:
        return False
    mt, nt, kt = (math.ceil(v / 16) for v in (cfg.bm, cfg.bn, cfg.bk))
    sp, esz = machine.scratchpad, _esz(shape)
    return (cfg.depth * mt * kt * 256 * esz <= sp["input"] and cfg.depth * kt * nt * 256 * esz <= sp["weight"]
            and 2 * mt * nt * 256 * 4 <= sp["accumulator"])


def config_words(shape, cfg: BlockConfig, machine: Machine, op_id: int = 0) -> np.ndarray:
    """The (2, 16) int32 header ``npu_block_begin`` reads: CONFIG + {CONFIG, 0, batch, bm, bn, bk, depth, dtypes,
    bias, activation ALU code (0: none), B batched} -- the epilogue flags tell the simulator whether the last k
    step stores C or leaves it for the epilogue intrinsic, and let ``time_blocks`` replay the op exactly."""
    prog = isa.Program()
    prog.config(op_id, shape.mode, machine.cores, machine, shape.m, shape.n, shape.k, batch=shape.batch)
    words = prog.array()
    words[1, 3:10] = [cfg.bm, cfg.bn, cfg.bk, cfg.depth] + [isa.DTYPE_CODES[d] for d in (shape.a_dtype, shape.b_dtype, shape.out_dtype)]
    words[1, 10:13] = [int(shape.bias), isa.ALU[shape.activation] if shape.activation else 0, int(shape.b_batched)]
    return words


def _lib():
    from . import build

    lib = build.global_library()
    lib.npu_time_blocks.restype = ctypes.c_int64
    lib.npu_time_blocks.argtypes = [ctypes.c_void_p]
    return lib


def time_blocks(shape, cfg: BlockConfig, machine: Machine) -> int:
    """Cycles of the op's tensorized kernel, by replaying its block calls in timing-only mode."""
    words = np.ascontiguousarray(config_words(shape, cfg, machine), dtype=np.int32)
    cycles = _lib().npu_time_blocks(words.ctypes.data)
    if cycles < 0:
        raise ValueError(f"npu-sim rejected block config {cfg} for {shape} (code {cycles})")
    return int(cycles)


def _sizes(dim: int, cap: int) -> list[int]:
    """Block sizes along one dimension: divisors that are multiples of 16 up to ``cap``; a dimension that is
    not a multiple of 16 also allows its divisors >= 16 (padded to 16 on chip), or itself when small."""
    divs = [d for d in range(1, min(dim, cap) + 1) if dim % d == 0]
    out = [d for d in divs if d % 16 == 0]
    if dim % 16:
        out += [d for d in divs if d % 16 and d >= 16] or ([dim] if dim <= cap else [])
    return sorted(set(out))


def candidate_block_configs(shape, machine: Machine, depths=(2,)) -> list[BlockConfig]:
    out = []
    for bm in _sizes(shape.m, MAX_BLOCK["m"]):
        for bn in _sizes(shape.n, MAX_BLOCK["n"]):
            for bk in _sizes(shape.k, MAX_BLOCK["k"]):
                if (bm < 32 and shape.m > 64) or (bn < 32 and shape.n > 64) or (bk < 32 and shape.k > 64):
                    continue
                for depth in depths:
                    cfg = BlockConfig(bm, bn, bk, depth)
                    if fits_block(shape, cfg, machine):
                        out.append(cfg)
    return out


_CACHE: dict = {}


def best_block_config(shape, machine: Machine):
    """(config, cycles, tried) by exhaustive search (depth 2, then 1/3/4 for the best three); None if nothing fits."""
    key = (shape, repr(machine))
    if key not in _CACHE:
        scored = [(time_blocks(shape, cfg, machine), cfg) for cfg in candidate_block_configs(shape, machine)]
        if not scored:
            _CACHE[key] = None
            return None
        scored.sort(key=lambda item: (item[0], -item[1].bm * item[1].bn))
        for _, cfg in scored[:3]:
            for depth in (1, 3, 4):
                other = BlockConfig(cfg.bm, cfg.bn, cfg.bk, depth)
                if fits_block(shape, other, machine):
                    scored.append((time_blocks(shape, other, machine), other))
        cycles, best = min(scored, key=lambda item: item[0])
        _CACHE[key] = (best, cycles, len(scored))
    return _CACHE[key]


# ---------------------------------------------------------------- kernels

def kernel_source(name: str, a_shape, b_shape, out_shape, shape, bias: bool, op_id: int, cfg: BlockConfig) -> str:
    """TVMScript of the op in its block loop nest (batch, n blocks, m blocks): per output block the init (0 or
    the bias row), the k steps of ``C += A x B``, and the activation epilogue into Out when the op has one (the
    matmul then accumulates into ``Acc``, the tensor the accumulator scratchpad holds); begin / end around it.

    The nest is written out rather than made by split + decompose_reduction because
    decompose_reduction leaves the init block without read regions (TVM assumes a constant init),
    and tensorize must bind the bias buffer from them."""
    nb = len(out_shape) - 2
    bat = [int(d) for d in out_shape[:-2]]
    buf = lambda n, shp, dt: f"{n}: T.Buffer(({', '.join(map(str, shp))},), \"{dt}\")"  # noqa: E731
    params = [buf("A", a_shape, shape.a_dtype), buf("B", b_shape, shape.b_dtype)]
    if bias:
        params.append(buf("Bias", [shape.n], shape.out_dtype))
    params += [buf("P", [2, 16], "int32"), buf("Out", out_shape, shape.out_dtype)]
    vb = [f"v{i}" for i in range(nb)]
    a_idx = ", ".join(vb + ["vi", "vk"])
    b_idx = ", ".join((vb if len(b_shape) > 2 else []) + ["vk", "vj"])
    o_idx = ", ".join(vb + ["vi", "vj"])
    acc = shape.out_dtype
    dst = "Acc" if shape.activation else "Out"
    bm, bn, bk = cfg.bm, cfg.bn, cfg.bk
    ind = " " * 8

    def axes(reduce: bool) -> list[str]:
        out = [f"{ind}    v{i} = T.axis.spatial({d}, b{i})" for i, d in enumerate(bat)]
        out += [f"{ind}    vi = T.axis.spatial({shape.m}, io * {bm} + ii)", f"{ind}    vj = T.axis.spatial({shape.n}, jo * {bn} + ji)"]
        if reduce:
            out.append(f"{ind}    vk = T.axis.reduce({shape.k}, ko * {bk} + ki)")
        return out

    outer = [f"b{i}" for i in range(nb)] + ["jo", "io"]
    extents = bat + [shape.n // bn, shape.m // bm]
    lines = [
        "@T.prim_func(s_tir=True)",
        f"def {name}({', '.join(params)}):",
        "    T.evaluate(T.call_extern(\"int32\", \"npu_block_begin\", P.data))",
    ]
    if shape.activation:
        lines.append(f"    Acc = T.alloc_buffer(({', '.join(map(str, out_shape))},), \"{acc}\")")
    lines += [
        f"    for {', '.join(outer)} in T.grid({', '.join(map(str, extents))}):",
        f"        for ii, ji in T.grid({bm}, {bn}):",
        f"{ind}    with T.sblock(\"C_init\"):",
        *[f"    {x}" for x in axes(False)],
        f"{ind}        {dst}[{o_idx}] = {'Bias[vj]' if bias else f'T.{acc}(0)'}",
        f"        for ko, ii, ji, ki in T.grid({shape.k // bk}, {bm}, {bn}, {bk}):",
        f"{ind}    with T.sblock(\"C\"):",
        *[f"    {x}" for x in axes(True)],
        f"{ind}        {dst}[{o_idx}] = {dst}[{o_idx}] + T.Cast(\"{acc}\", A[{a_idx}]) * T.Cast(\"{acc}\", B[{b_idx}])",
    ]
    if shape.activation:
        lines += [
            f"        for ii, ji in T.grid({bm}, {bn}):",
            f"{ind}    with T.sblock(\"C_act\"):",
            *[f"    {x}" for x in axes(False)],
            f"{ind}        Out[{o_idx}] = {_act_expr(shape.activation, f'Acc[{o_idx}]', acc)}",
        ]
    lines.append(f"    T.evaluate(T.call_extern(\"int32\", \"npu_block_end\", {op_id}))")
    return "\n".join(lines) + "\n"


def intrin_loop(sch: Schedule, block, extents: list[int]):
    """The loop to tensorize: the outermost of the block's inner ``len(extents)`` loops that is not a unit
    loop (the intrinsics' descs have no loop for a unit dimension either; see ``_nest``)."""
    loops = sch.get_loops(block)[-len(extents):]
    for loop, extent in zip(loops, extents):
        if extent > 1:
            return loop
    raise ValueError("an NPU block of a single element has nothing to tensorize")


def schedule_blocks(sch: Schedule, shape, cfg: BlockConfig) -> None:
    """``sch.tensorize`` of the three blocks of every output block: init, multiply-accumulate (per k step), epilogue."""
    init, blk = sch.get_sblock("C_init"), sch.get_sblock("C")
    sch.tensorize(intrin_loop(sch, init, [cfg.bm, cfg.bn]), register_init(cfg.bm, cfg.bn, shape.out_dtype, shape.bias))
    sch.tensorize(intrin_loop(sch, blk, [cfg.bm, cfg.bn, cfg.bk]), register_block(cfg.bm, cfg.bn, cfg.bk, shape.a_dtype, shape.b_dtype, shape.out_dtype))
    if shape.activation:
        act = sch.get_sblock("C_act")
        sch.tensorize(intrin_loop(sch, act, [cfg.bm, cfg.bn]), register_act(cfg.bm, cfg.bn, shape.out_dtype, shape.activation))


def block_kernel(name: str, a_shape, b_shape, out_shape, shape, cfg: BlockConfig, bias: bool, op_id: int) -> tvm.tirx.PrimFunc:
    """The scheduled, tensorized PrimFunc of one NPU op (args: A, B, [Bias], P = config_words, Out)."""
    func = _from_source(kernel_source(name, a_shape, b_shape, out_shape, shape, bias, op_id, cfg))
    sch = Schedule(func.with_attr("global_symbol", name))
    schedule_blocks(sch, shape, cfg)
    return sch.mod["main"]
