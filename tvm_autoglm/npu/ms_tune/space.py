"""The MetaSchedule view of one NPU matmul: its workload, design space and what a schedule says.

Each NPU matmul shape is one MetaSchedule task. Its workload is the matmul as TIR
(``te.create_prim_func``), with the op's epilogue and the machine carried in a function
attribute so two machines or epilogues are two workloads. The design space (``schedule_fn``)
tiles the loops by the 16x16x16 MAC tile and then by ``sample_perfect_tile`` over the tile
counts of M, N and K (the block sizes mb, nb, kb of the NPU program) and
``sample_categorical`` over the buffer depth; the sampled values are also written as block
annotations, so the scheduled module itself says which program to emit (``config_of``).
The block route (``block_schedule_fn``) is the same idea for the tensorized kernel.
"""

from __future__ import annotations

import dataclasses
import json

from ..codegen import MatmulShape, TileConfig, fits, instruction_estimate
from ..config import Machine

ATTR = "npu.workload"
BLOCK = "C"
UPDATE = "C_update"  # the update block once decompose_reduction split the init off
DEPTHS = (1, 2, 3)
MAX_INSNS = 6000  # same program-length cap as the exhaustive search (tiling / codegen.candidate_configs)
MAX_TILES = {"m": 16, "n": 16, "k": 32}  # largest block, in 16-tiles: 256 x 256 x 512, as the exhaustive search
_KEYS = {"m": "npu.m_tiles", "n": "npu.n_tiles", "k": "npu.k_tiles", "depth": "npu.depth"}

def workload_key(shape: MatmulShape, machine: Machine, route: str = "program") -> str:
    """What the cycles of a program depend on, beyond the loop nest: epilogue, machine (and route when it is not
    the program route, so block-route records are other workloads)."""
    data = {"shape": dataclasses.asdict(shape), "machine": dataclasses.asdict(machine)}
    if route != "program":
        data["route"] = route
    return json.dumps(data, sort_keys=True)


def workload(shape: MatmulShape, machine: Machine, route: str = "program"):
    """The matmul as a TIR PrimFunc (the MetaSchedule workload of one NPU op)."""
    import tvm
    from tvm import te

    a = te.placeholder((shape.batch, shape.m, shape.k), shape.a_dtype, name="A")
    b = te.placeholder((shape.batch, shape.k, shape.n) if shape.b_batched else (shape.k, shape.n), shape.b_dtype, name="B")
    r = te.reduce_axis((0, shape.k), name="k")
    acc = shape.out_dtype

    def body(bi, i, j):
        rhs = b[bi, r, j] if shape.b_batched else b[r, j]
        return te.sum(a[bi, i, r].astype(acc) * rhs.astype(acc), axis=r)

    c = te.compute((shape.batch, shape.m, shape.n), body, name=BLOCK)
    func = te.create_prim_func([a, b, c]).with_attr(ATTR, workload_key(shape, machine, route))
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def task_name(shape: MatmulShape, route: str = "program") -> str:
    epi = ("_bias" if shape.bias else "") + (f"_{shape.activation}" if shape.activation else "")
    kind = "npu_matmul" if route == "program" else "npu_gemm_block"
    return f"{kind}{epi}_{shape.batch}x{shape.m}x{shape.n}x{shape.k}_{shape.a_dtype}"


def shape_machine(mod) -> tuple[MatmulShape, Machine]:
    data = json.loads(str(mod["main"].attrs[ATTR]))
    return MatmulShape(**data["shape"]), Machine(**data["machine"])


def route_of(mod) -> str:
    return json.loads(str(mod["main"].attrs[ATTR])).get("route", "program")


def schedule_fn(sch) -> None:
    """The design space: 16-tiling, then mb/nb/kb as perfect tiles of the tile counts, depth categorical."""
    blk = sch.get_sblock(BLOCK)
    _, i, j, k = sch.get_loops(blk)
    tiles = {}
    outer = {}
    for name, loop in (("m", i), ("n", j), ("k", k)):
        count, _ = sch.split(loop, [None, 16])
        tiles[name] = sch.sample_perfect_tile(count, n=2, max_innermost_factor=MAX_TILES[name])
        outer[name] = sch.split(count, tiles[name])
    depth = sch.sample_categorical(list(DEPTHS), [1.0 / len(DEPTHS)] * len(DEPTHS))
    for name in ("m", "n", "k"):
        sch.annotate(blk, _KEYS[name], tiles[name][1])
    sch.annotate(blk, _KEYS["depth"], depth)
    # the loop nest of the NPU program: blocks n-major, K streamed through them, then the 16x16x16 tile
    b, _, _, m_t, _, _, n_t, _, _, k_t = sch.get_loops(blk)
    (mo, mi), (no, ni), (ko, ki) = outer["m"], outer["n"], outer["k"]
    sch.reorder(b, no, mo, ko, mi, ni, ki, m_t, n_t, k_t)


_BLOCK_KEYS = {"m": "npu.bm", "n": "npu.bn", "k": "npu.bk", "depth": "npu.depth"}


def block_schedule_fn(sch) -> None:
    """The block route's design space: bm, bn, bk by ``sample_perfect_tile`` (over the 16-tile counts where
    a dimension is a multiple of 16, else over the dimension), depth categorical, loops in the kernel's
    block order (batch, n, m, k steps). ``TensorizeBlocks`` (a postprocessor, so a mutated tile decision
    re-tensorizes with the intrinsic of its new size) then calls ``sch.tensorize``."""
    blk = sch.get_sblock(BLOCK)
    loops = sch.get_loops(blk)
    batch, dims = loops[:-3], dict(zip("mnk", loops[-3:]))
    shape, _ = shape_machine(sch.mod)
    extent = {"m": shape.m, "n": shape.n, "k": shape.k}
    caps = {"m": 256, "n": 256, "k": 512}
    outer, inner = {}, {}
    for name, loop in dims.items():
        if extent[name] % 16 == 0:
            count, t16 = sch.split(loop, [None, 16])
            tile = sch.sample_perfect_tile(count, n=2, max_innermost_factor=caps[name] // 16)
            outer[name], mid = sch.split(count, tile)
            inner[name] = sch.fuse(mid, t16)
        else:
            tile = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=caps[name])
            outer[name], inner[name] = sch.split(loop, tile)
        sch.annotate(blk, _BLOCK_KEYS[name], tile[1])  # in 16-tiles where the dimension is a multiple of 16
    sch.annotate(blk, _BLOCK_KEYS["depth"], sch.sample_categorical(list(DEPTHS), [1.0 / len(DEPTHS)] * len(DEPTHS)))
    sch.reorder(*batch, outer["n"], outer["m"], outer["k"], inner["m"], inner["n"], inner["k"])
    sch.decompose_reduction(blk, outer["k"])  # init block: the zero-init intrinsic; update block: the block intrinsic's C += A x B


def block_config_of(mod):
    """The BlockConfig a scheduled block-route workload carries (annotations of C, or of C_o once tensorized)."""
    from tvm.s_tir import Schedule

    from ..tensorize import BlockConfig

    shape, _ = shape_machine(mod)
    sch = Schedule(mod)
    for name in (UPDATE + "_o", UPDATE, BLOCK):
        try:
            ann = sch.get(sch.get_sblock(name)).annotations
        except Exception:  # noqa: BLE001 - that block does not exist in this stage of the schedule
            continue
        if _BLOCK_KEYS["m"] in ann:
            if name == UPDATE + "_o":  # TensorizeBlocks wrote the sizes themselves
                return BlockConfig(*(int(ann[_BLOCK_KEYS[key]]) for key in ("m", "n", "k", "depth")))
            size = {key: int(ann[_BLOCK_KEYS[key]]) * (16 if dim % 16 == 0 else 1)
                    for key, dim in (("m", shape.m), ("n", shape.n), ("k", shape.k))}
            return BlockConfig(size["m"], size["n"], size["k"], int(ann[_BLOCK_KEYS["depth"]]))
    raise ValueError("not an npu-sim block schedule: block annotations missing")


def valid_block(shape: MatmulShape, cfg, machine: Machine) -> bool:
    """Fits the scratchpads and is one of the sizes the search would try (no sub-16 slivers of a big dim)."""
    from ..tensorize import MAX_BLOCK, _sizes, fits_block

    return (fits_block(shape, cfg, machine) and cfg.bm in _sizes(shape.m, MAX_BLOCK["m"])
            and cfg.bn in _sizes(shape.n, MAX_BLOCK["n"]) and cfg.bk in _sizes(shape.k, MAX_BLOCK["k"]))


def config_of(mod) -> TileConfig:
    """The tile configuration a scheduled workload carries in its block annotations."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    ann = sch.get(sch.get_sblock(BLOCK)).annotations
    try:
        mt, nt, kt, depth = (int(ann[_KEYS[key]]) for key in ("m", "n", "k", "depth"))
    except KeyError as err:
        raise ValueError(f"not an npu-sim schedule: block annotation {err} missing") from None
    return TileConfig(16 * mt, 16 * nt, 16 * kt, depth)


def valid(shape: MatmulShape, cfg: TileConfig, machine: Machine) -> bool:
    return fits(shape, cfg, machine) and instruction_estimate(shape, cfg) <= MAX_INSNS


def cycles_to_seconds(cycles: int, machine: Machine) -> float:
    return cycles / (machine.clock_mhz * 1e6)
