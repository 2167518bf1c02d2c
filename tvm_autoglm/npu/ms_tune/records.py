"""Using NPU tuning records: the best valid record of a shape, and the database compile consults.

Compiling with a database (``TileRecords``, via ``npu.config.settings_for``) makes the tile choice use the best
record of a shape; shapes without a record keep the exhaustive search. A record is
replayed from its trace and checked again (fits the scratchpads) before it is trusted.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AutoGLMError
from ..codegen import MatmulShape, TileConfig
from ..config import Machine
from .space import block_config_of, config_of, valid, valid_block, workload


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

    from ..tensorize import register_block  # noqa: F401 - replaying a trace needs its intrinsics registered

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
