"""The MetaSchedule plug-ins of NPU tuning: "building" a candidate emits its instruction program,
"running" it is the simulator's cycle count (``run_secs = cycles / clock``; no host timing enters
a record); a postprocessor rejects tiles that overflow the scratchpads (or tensorizes the block
route), and a mutator moves the buffer-depth decision (MutateTileSize already moves the tiles).

Importing this module imports TVM: the loop imports it only when it tunes.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..codegen import matmul_program
from ..sim import time_program
from .space import (BLOCK, DEPTHS, UPDATE, _BLOCK_KEYS, block_config_of, config_of, cycles_to_seconds, route_of,
                    shape_machine, valid, valid_block)


@derived_object
class FitsScratchpad(ms.postproc.PyPostproc):
    """Rejects a sampled schedule whose blocks overflow a scratchpad (or make an overlong program)."""

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, sch) -> bool:
        shape, machine = shape_machine(sch.mod)
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
                shape, machine = shape_machine(inp.mod)
                if route_of(inp.mod) == "tensorize":
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
                    from ..tensorize import time_blocks

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
        from ..tensorize import intrin_loop, register_block, register_init

        shape, machine = shape_machine(sch.mod)
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


@dataclass
class ProgramStore:
    """Programs between build and run, in memory (no files to clean up); ``measured``: (config, cycles) in order."""

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
