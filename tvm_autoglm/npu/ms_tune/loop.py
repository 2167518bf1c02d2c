"""The NPU tuning loop: MetaSchedule over the tile space of each shape, measured by the simulator.

``tune_shapes`` tunes given shapes (one task each); ``tune`` tunes every NPU matmul of a
model, weighted by how often each shape occurs. Records already in the database seed the
search and are not measured again (MetaSchedule skips a schedule it finds there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import AutoGLMError
from ..codegen import MatmulShape
from ..config import Machine
from .records import best_block_record, best_record
from .space import block_schedule_fn, schedule_fn, task_name, workload


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

    from ...tuning.fastimport import preload_tensor_intrin

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
    from .plugins import ProgramBuilder, ProgramStore, SimulatorRunner  # imports TVM: only when tuning

    store = ProgramStore()
    target = _target()
    tasks = [_tune_context(shape, route, machine, n, seed, target) for n, (shape, route) in enumerate(pairs)]
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


def _tune_context(shape, route: str, machine: Machine, n: int, seed: int, target):
    """One shape's MetaSchedule task: its workload, design space (program or block route), search strategy."""
    from tvm.s_tir import meta_schedule as ms

    from .plugins import FitsScratchpad, MutateDepth, TensorizeBlocks

    block = route == "tensorize"
    return ms.TuneContext(
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
    )


def model_shapes(model, target="npu-sim", opt_level: int = 3, input_shapes=None, with_routes: bool = False):
    """(NPU matmul shapes, how many ops have each, the machine) of a model compiled for an npu target;
    with ``with_routes`` the shapes are (shape, route) pairs (the route each op was placed with)."""
    from collections import Counter

    from ...targets import TargetSpec, load_target
    from ..config import machine_from
    from ..partition import npu_ops

    from ...backends import NpuBackend, for_target

    spec = target if isinstance(target, TargetSpec) else load_target(target)
    if not isinstance(for_target(spec), NpuBackend):
        raise AutoGLMError(f"target {spec.name} is not an NPU target")
    machine = machine_from(spec.extra)
    build = _build_for_npu(model, spec, opt_level, input_shapes)
    if with_routes:
        counts = Counter((MatmulShape(**op["workload"]), op.get("route", "program")) for op in npu_ops(build.mod))
    else:
        counts = Counter(MatmulShape(**op["workload"]) for op in npu_ops(build.mod))
    return list(counts), dict(counts), machine


def _build_for_npu(model, spec, opt_level, input_shapes):
    """The partitioned module compile would emit for the target's machine."""
    from ...pipeline import compile_model

    return compile_model(model, spec, opt_level, input_shapes, until="relax").build


def tune(model, database, target="npu-sim", opt_level: int = 3, input_shapes=None, trials: int = 64,
         seed: int = 0, trials_per_iter: int = 16) -> NpuTuneResult:
    """Tunes every NPU matmul of a model (weights: how often each shape occurs) into ``database``."""
    pairs, counts, machine = model_shapes(model, target, opt_level, input_shapes, with_routes=True)
    return tune_shapes([p[0] for p in pairs], machine, database, trials=trials, seed=seed, trials_per_iter=trials_per_iter,
                       weights=[float(counts[p]) for p in pairs], routes=[p[1] for p in pairs])
