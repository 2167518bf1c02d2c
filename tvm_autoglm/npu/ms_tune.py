"""Tile sizes and buffer depth of NPU matmuls chosen by MetaSchedule, measured in simulated cycles.

Each NPU matmul shape is one MetaSchedule task. Its workload is the matmul as
TIR (``te.create_prim_func``), with the op's epilogue and the machine carried
in a function attribute so two machines or epilogues are two workloads. The
design space (``ScheduleFn``) tiles the loops by the 16x16x16 MAC tile and then
by ``sample_perfect_tile`` over the tile counts of M, N and K (the block sizes
mb, nb, kb of the NPU program) and ``sample_categorical`` over the buffer depth;
the sampled values are also written as block annotations, so the scheduled
module itself says which program to emit. A postprocessor rejects choices
that overflow the scratchpads, a mutator flips the depth decision (MutateTileSize
already mutates the tile decisions), and MetaSchedule's evolutionary search and
XGBoost cost model pick what to measure.

"Building" a candidate is emitting its instruction program (codegen); "running"
it is the simulator's cycle count for that program (``npu_time_program``), reported
as ``run_secs = cycles / clock``. No host timing enters any record.

Compiling with a database (``TileRecords``, via ``config.settings_for``) makes the tile choice use the
best record of a shape; shapes without a record keep the exhaustive search.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import random
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AutoGLMError
from .codegen import MatmulShape, TileConfig, fits, instruction_estimate, matmul_program
from .config import Machine
from .sim import time_program

ATTR = "npu.workload"
BLOCK = "C"
UPDATE = "C_update"  # the update block once decompose_reduction split the init off
DEPTHS = (1, 2, 3)
MAX_INSNS = 6000  # same program-length cap as the exhaustive search (tiling / codegen.candidate_configs)
MAX_TILES = {"m": 16, "n": 16, "k": 32}  # largest block, in 16-tiles: 256 x 256 x 512, as the exhaustive search
_KEYS = {"m": "npu.m_tiles", "n": "npu.n_tiles", "k": "npu.k_tiles", "depth": "npu.depth"}


# ---------------------------------------------------------------- workloads

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


def _shape_machine(mod) -> tuple[MatmulShape, Machine]:
    data = json.loads(str(mod["main"].attrs[ATTR]))
    return MatmulShape(**data["shape"]), Machine(**data["machine"])


def _route(mod) -> str:
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
    shape, _ = _shape_machine(sch.mod)
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

    from .tensorize import BlockConfig

    shape, _ = _shape_machine(mod)
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
    from .tensorize import MAX_BLOCK, _sizes, fits_block

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


# ---------------------------------------------------------------- MetaSchedule plug-ins

def _plugins():
    """Builder, runner, postprocessor and mutator classes (made lazily: importing them pulls in TVM)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class FitsScratchpad(ms.postproc.PyPostproc):
        """Rejects a sampled schedule whose blocks overflow a scratchpad (or make an overlong program)."""

        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            shape, machine = _shape_machine(sch.mod)
            return valid(shape, config_of(sch.mod), machine)

        def clone(self):
            return FitsScratchpad()

    @derived_object
    class MutateDepth(ms.mutator.PyMutator):
        """Moves the buffer-depth decision (``sample_categorical``) to another candidate."""

        def __init__(self, seed: int = 0):
            self.seed = seed
            self._rng = random.Random(seed)

        def _initialize_with_tune_context(self, context) -> None:
            self._rng = random.Random(int(context.rand_state))

        def apply(self, trace, _rand_state):
            insts = [inst for inst in trace.insts if inst.kind.name == "SampleCategorical"]
            if not insts:
                return None
            inst = insts[0]
            old = int(trace.decisions[inst])
            choices = [d for d in range(len(DEPTHS)) if d != old]
            return trace.with_decision(inst, self._rng.choice(choices), remove_postproc=True)

        def clone(self):
            return MutateDepth(self._rng.randrange(1 << 30))

    @derived_object
    class ProgramBuilder(ms.builder.PyBuilder):
        """Emits the NPU instruction program of each candidate; the artifact is a key to it."""

        def __init__(self, store):
            self.store = store

        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                try:
                    shape, machine = _shape_machine(inp.mod)
                    if _route(inp.mod) == "tensorize":
                        # the candidate is the tensorized matmul; its cost is the replay of its block calls
                        # (tensorize.time_blocks, equal to what the compiled kernel counts: tests/npu/test_tensorize.py)
                        if "npu_gemm_block" not in inp.mod.script():
                            raise ValueError("candidate is not tensorized")
                        cfg = block_config_of(inp.mod)
                        program = ("blocks", shape)
                    else:
                        cfg = config_of(inp.mod)
                        program = matmul_program(shape, cfg, machine).array()
                    results.append(ms.builder.BuilderResult(self.store.put(program, machine, cfg), None))
                except Exception as err:  # noqa: BLE001 - a bad candidate is a failed build, not a crash
                    results.append(ms.builder.BuilderResult(None, f"npu-sim codegen: {err}"))
            return results

    @derived_object
    class DoneFuture(ms.runner.PyRunnerFuture):
        def __init__(self, result):
            self._result = result

        def done(self) -> bool:
            return True

        def result(self):
            return self._result

    @derived_object
    class SimulatorRunner(ms.runner.PyRunner):
        """run_secs = the simulator's cycle count of the program / the NPU clock (no host timing)."""

        def __init__(self, store):
            self.store = store

        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                try:
                    program, machine, cfg = self.store.pop(inp.artifact_path)
                    if isinstance(program, tuple):
                        from .tensorize import time_blocks

                        cycles = time_blocks(program[1], cfg, machine)
                    else:
                        cycles = time_program(program)
                    self.store.measured.append((cfg, cycles))
                    res = ms.runner.RunnerResult([cycles_to_seconds(cycles, machine)], None)
                except Exception as err:  # noqa: BLE001
                    res = ms.runner.RunnerResult(None, f"npu-sim: {err}")
                futures.append(DoneFuture(res))
            return futures

    @derived_object
    class TensorizeBlocks(ms.postproc.PyPostproc):
        """Rejects block sizes that do not fit; tensorizes the rest with the block intrinsic of their size."""

        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            from .tensorize import intrin_loop, register_block, register_init

            shape, machine = _shape_machine(sch.mod)
            cfg = block_config_of(sch.mod)
            if not valid_block(shape, cfg, machine):
                return False
            # decompose_reduction's init block: the zero-init intrinsic (the accumulator reset on chip)
            init = sch.get_sblock(BLOCK + "_init")
            sch.tensorize(intrin_loop(sch, init, [cfg.bm, cfg.bn]), register_init(cfg.bm, cfg.bn, shape.out_dtype, False))
            blk = sch.get_sblock(UPDATE)
            outer = sch.blockize(intrin_loop(sch, blk, [cfg.bm, cfg.bn, cfg.bk]))
            sch.tensorize(outer, register_block(cfg.bm, cfg.bn, cfg.bk, shape.a_dtype, shape.b_dtype, shape.out_dtype))
            for key, value in zip(("m", "n", "k", "depth"), (cfg.bm, cfg.bn, cfg.bk, cfg.depth)):
                sch.annotate(outer, _BLOCK_KEYS[key], value)
            return True

        def clone(self):
            return TensorizeBlocks()

    return FitsScratchpad, MutateDepth, ProgramBuilder, SimulatorRunner, TensorizeBlocks


@dataclass
class _Store:
    """Programs between build and run, in memory (no files to clean up)."""

    programs: dict = field(default_factory=dict)
    measured: list = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, program, machine, cfg) -> str:
        with self._lock:
            key = f"npu-sim-program:{next(self._ids)}"
            self.programs[key] = (program, machine, cfg)
        return key

    def pop(self, key):
        with self._lock:
            return self.programs.pop(key)


# ---------------------------------------------------------------- tuning

@dataclass
class NpuTuneResult:
    database: str
    trials: int  # measured in this run
    records_before: int
    records_after: int
    measured: list  # [(TileConfig, cycles)] in measuring order
    best: dict  # task name -> {"tile": ..., "cycles": ..., "run_secs": ...}

    def to_json(self) -> dict:
        return {
            "database": self.database, "trials": self.trials, "records_before": self.records_before,
            "records_after": self.records_after, "best": self.best,
            "measured": [{"tile": cfg.to_json(), "cycles": cyc} for cfg, cyc in self.measured],
        }


def _target():
    import tvm

    # Only a label on the records: nothing is compiled for it (the builder emits NPU programs).
    return tvm.target.Target({"kind": "llvm", "keys": ["npu-sim", "cpu"]})


def _quiet_logger(name: str):
    lg = logging.getLogger(f"tvm_autoglm.npu.ms_tune.{name}")
    lg.setLevel(logging.WARNING)
    return lg


def tune_shapes(
    shapes,
    machine: Machine,
    database: str | Path,
    trials: int = 64,
    seed: int = 0,
    trials_per_iter: int = 16,
    weights=None,
    routes=None,
) -> NpuTuneResult:
    """Tunes the tile configuration of each NPU matmul shape into a JSONDatabase folder.

    ``trials`` is the global number of new measurements (simulator runs); records already
    in the database seed the search and are not measured again.
    """
    from tvm.s_tir import meta_schedule as ms

    from ..tuning.fastimport import preload_tensor_intrin

    preload_tensor_intrin()  # TuneContext imports it; minutes on a loaded box without this
    routes = list(routes) if routes is not None else ["program"] * len(list(shapes))
    pairs = list(dict.fromkeys(zip(shapes, routes)))
    if not pairs:
        raise AutoGLMError("npu-sim tune: the model has no NPU matmuls to tune")
    if trials < 1:
        raise AutoGLMError(f"--trials must be >= 1 (got {trials})")
    work_dir = Path(database)
    work_dir.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    before = len(db)
    FitsScratchpad, MutateDepth, ProgramBuilder, SimulatorRunner, TensorizeBlocks = _plugins()
    store = _Store()
    target = _target()
    tasks = []
    for n, (shape, route) in enumerate(pairs):
        block = route == "tensorize"
        tasks.append(ms.TuneContext(
            mod=workload(shape, machine, route),
            target=target,
            space_generator=ms.space_generator.ScheduleFn(
                block_schedule_fn if block else schedule_fn,
                sch_rules=[],
                postprocs=[TensorizeBlocks() if block else FitsScratchpad()],
                mutator_probs={ms.mutator.MutateTileSize(): 0.7, MutateDepth(seed): 0.3},
            ),
            search_strategy=ms.search_strategy.EvolutionarySearch(
                population_size=64, init_min_unmeasured=16, genetic_num_iters=3, eps_greedy=0.1,
            ),
            task_name=task_name(shape, route),
            rand_state=seed * 1000 + n + 1,
            num_threads=1,  # deterministic sampling for a given seed; the simulator is the cheap part
            logger=_quiet_logger(task_name(shape, route)),
        ))
    cost_model = ms.cost_model.XGBModel(
        extractor=ms.feature_extractor.PerStoreFeature(),
        config=ms.cost_model.xgb_model.XGBConfig(seed=seed, nthread=1),
        num_warmup_samples=min(16, trials),
        adaptive_training=False,
    )
    # XGBModel predicts with numpy's global generator until it has num_warmup_samples
    # measurements: seed it for this run, so one seed gives one search, then put it back.
    rng_state = np.random.get_state()
    np.random.seed(seed)
    try:
        ms.tune_tasks(
            tasks=tasks,
            task_weights=list(weights) if weights is not None else [1.0] * len(tasks),
            work_dir=str(work_dir),
            max_trials_global=trials,
            num_trials_per_iter=trials_per_iter,
            builder=ProgramBuilder(store),
            runner=SimulatorRunner(store),
            database=db,
            cost_model=cost_model,
            measure_callbacks=[ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()],
            task_scheduler=ms.task_scheduler.GradientBased(seed=seed + 1),
        )
    finally:
        np.random.set_state(rng_state)
    best = {}
    for shape, route in pairs:
        rec = best_block_record(db, shape, machine) if route == "tensorize" else best_record(db, shape, machine)
        if rec is not None:
            cfg, secs = rec
            best[task_name(shape, route)] = {"tile": cfg.to_json(), "run_secs": secs, "cycles": round(secs * machine.clock_mhz * 1e6)}
    return NpuTuneResult(str(work_dir), len(store.measured), before, len(db), list(store.measured), best)


def model_shapes(model, target="npu-sim", opt_level: int = 3, input_shapes=None, with_routes: bool = False):
    """(NPU matmul shapes, how many ops have each, the machine) of a model compiled for an npu target;
    with ``with_routes`` the shapes are (shape, route) pairs (the route each op was placed with)."""
    from collections import Counter

    from ..backends import NpuBackend, for_target
    from ..pipeline import compile_model
    from ..targets import TargetSpec, load_target
    from .config import machine_from
    from .partition import npu_ops

    spec = target if isinstance(target, TargetSpec) else load_target(target)
    if not isinstance(for_target(spec), NpuBackend):
        raise AutoGLMError(f"target {spec.name} is not an NPU target")
    machine = machine_from(spec.extra)
    build = compile_model(model, spec, opt_level, input_shapes, until="relax").build
    if with_routes:
        counts = Counter((MatmulShape(**op["workload"]), op.get("route", "program")) for op in npu_ops(build.mod))
    else:
        counts = Counter(MatmulShape(**op["workload"]) for op in npu_ops(build.mod))
    return list(counts), dict(counts), machine


def tune(model, database, target="npu-sim", opt_level: int = 3, input_shapes=None, trials: int = 64,
         seed: int = 0, trials_per_iter: int = 16) -> NpuTuneResult:
    """Tunes every NPU matmul of a model (weights: how often each shape occurs) into ``database``."""
    pairs, counts, machine = model_shapes(model, target, opt_level, input_shapes, with_routes=True)
    return tune_shapes([p[0] for p in pairs], machine, database, trials=trials, seed=seed, trials_per_iter=trials_per_iter,
                       weights=[float(counts[p]) for p in pairs], routes=[p[1] for p in pairs])


def best_record(db, shape: MatmulShape, machine: Machine) -> tuple[TileConfig, float] | None:
    """(tile config, run_secs) of a shape's best valid record, replayed from its trace; None if none."""
    from tvm.s_tir import Schedule

    mod = workload(shape, machine)
    if not db.has_workload(mod):
        return None
    for rec in db.get_top_k(db.commit_workload(mod), 8):
        if not rec.run_secs:
            continue
        sch = Schedule(mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        cfg = config_of(sch.mod)
        if valid(shape, cfg, machine):
            return cfg, float(rec.run_secs[0])
    return None


def best_block_record(db, shape: MatmulShape, machine: Machine):
    """(BlockConfig, run_secs) of a shape's best valid block-route record, replayed from its trace; None if none."""
    from tvm.s_tir import Schedule

    from .tensorize import register_block  # noqa: F401 - replaying a trace needs its intrinsics registered

    mod = workload(shape, machine, "tensorize")
    if not db.has_workload(mod):
        return None
    for rec in db.get_top_k(db.commit_workload(mod), 8):
        if not rec.run_secs:
            continue
        sch = Schedule(mod)
        try:
            rec.trace.apply_to_schedule(sch, remove_postproc=True)
            cfg = block_config_of(sch.mod)
        except Exception:  # noqa: BLE001 - a record this version cannot replay is skipped
            continue
        if valid_block(shape, cfg, machine):
            return cfg, float(rec.run_secs[0])
    return None


# ---------------------------------------------------------------- using the records when compiling

class TileRecords:
    """A JSONDatabase folder opened once, answering ``lookup(shape, machine)``."""

    def __init__(self, path: str | Path):
        from tvm.s_tir import meta_schedule as ms

        path = Path(path)
        if not (path / "database_workload.json").is_file():
            raise AutoGLMError(f"npu-sim tuning database {path} not found (no database_workload.json)",
                               hint="run `auto-glm tune --target npu-sim ...` first")
        self.path = path
        self.db = ms.database.JSONDatabase(work_dir=str(path), allow_missing=False)
        self.used = 0

    def lookup(self, shape: MatmulShape, machine: Machine) -> TileConfig | None:
        found = best_record(self.db, shape, machine)
        if found is None:
            return None
        self.used += 1
        return found[0]

    def lookup_block(self, shape: MatmulShape, machine: Machine):
        """The best block-route (tensorize) record of a shape, or None."""
        found = best_block_record(self.db, shape, machine)
        if found is None:
            return None
        self.used += 1
        return found[0]


def tune_for_driver(model, spec, opt_level: int = 3, input_shapes=None, trials: int | None = None, time_budget=None,
                    tuning_db=None, seed: int = 0, rpc_tracker=None, progress: bool = True, **_ignored):
    """``tuning.driver.tune`` for an NPU target: same arguments, same TuneResult (tasks with best_us)."""
    import time

    from ..tuning import database as dbmod
    from ..tuning.driver import TuneResult

    if time_budget is not None:
        raise AutoGLMError(f"target {spec.name}: --time-budget is not supported; give --trials (one trial = one simulator run)")
    if rpc_tracker:
        raise AutoGLMError(f"target {spec.name} is measured by the simulator in-process; --rpc-tracker does not apply")
    start = time.monotonic()
    pairs, counts, machine = model_shapes(model, spec, opt_level, input_shapes, with_routes=True)
    shapes = pairs
    if not shapes:
        raise AutoGLMError(f"{spec.name}: the model has no NPU matmuls to tune")
    trials = 32 * len(shapes) if trials is None else trials
    work_dir = Path(tuning_db) if tuning_db else dbmod.default_dir(spec.name)
    if progress:
        print(f"npu tune: {len(shapes)} NPU matmul shapes, {trials} simulator trials -> {work_dir}", file=sys.stderr, flush=True)
    res = tune_shapes([p[0] for p in pairs], machine, work_dir, trials=trials, seed=seed,
                      weights=[float(counts[p]) for p in pairs], routes=[p[1] for p in pairs])
    tasks = []
    for shape, route in pairs:
        best = res.best.get(task_name(shape, route))
        tasks.append({
            "name": task_name(shape, route), "count": counts[(shape, route)], "tile": best["tile"] if best else None,
            "cycles": best["cycles"] if best else None, "best_us": best["run_secs"] * 1e6 if best else None,
        })
    total = [t["best_us"] * t["count"] for t in tasks if t["best_us"] is not None]
    return TuneResult(
        database=str(work_dir), target=spec.name, trials=res.trials, records_before=res.records_before,
        records_after=res.records_after, elapsed_s=time.monotonic() - start, stop_reason="trials",
        estimated_ms_start=None, estimated_ms_end=(sum(total) / 1e3) if len(total) == len(tasks) else None,
        tasks=tasks,
    )
