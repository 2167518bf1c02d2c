"""Tile sizes and buffer depth of NPU matmuls chosen by MetaSchedule, measured in simulated cycles.

One module per job:

- ``space``: the workload of one NPU matmul, its design space, and the tile config a schedule carries;
- ``plugins``: builder (emits the NPU program), runner (simulator cycles / clock), postprocessors,
  the depth mutator (importing it imports TVM);
- ``loop``: the tuning loop over shapes or a model (``tune_shapes``, ``tune``);
- ``records``: best records, and the database compile consults (``TileRecords``);
- ``driver_adapter``: ``tuning.driver.tune`` for an NPU target.

"Building" a candidate is emitting its instruction program (codegen); "running" it is the
simulator's cycle count for that program, reported as ``run_secs = cycles / clock``. No host
timing enters any record. Importing this package does not import TVM.
"""

from .driver_adapter import tune_for_driver
from .loop import NpuTuneResult, model_shapes, tune, tune_shapes
from .records import TileRecords, best_block_record, best_record
from .space import (ATTR, BLOCK, DEPTHS, MAX_INSNS, MAX_TILES, UPDATE, block_config_of, block_schedule_fn, config_of,
                    cycles_to_seconds, schedule_fn, task_name, valid, valid_block, workload, workload_key)

__all__ = [
    "ATTR", "BLOCK", "DEPTHS", "MAX_INSNS", "MAX_TILES", "UPDATE", "NpuTuneResult", "TileRecords", "best_block_record",
    "best_record", "block_config_of", "block_schedule_fn", "config_of", "cycles_to_seconds",
    "model_shapes", "schedule_fn", "task_name", "tune", "tune_for_driver", "tune_shapes", "valid",
    "valid_block", "workload", "workload_key",
]
