"""Choosing tile sizes and buffer depth by simulated cycles.

The cost of a candidate is the simulator's own cycle count for the op's
program, run in timing-only mode (no data, counters untouched), so the
search sees exactly the overlap and DMA costs the model will see at run time.
Two choosers use it: MetaSchedule (``ms_tune``: its records are used when a
database is given) and, for shapes without a record, the exhaustive search here.
"""

from __future__ import annotations

from .codegen import NAIVE, MatmulShape, TileConfig, candidate_configs, fits, matmul_program
from .config import Machine
from .sim import time_program


_CACHE: dict = {}


def choose(shape: MatmulShape, machine: Machine, records=None) -> tuple[TileConfig, int, int, str]:
    """(config, cycles, candidates tried, source): the MetaSchedule record of this shape when
    ``records`` (an ``ms_tune.TileRecords``, from the compile's tuning database) has one, else the
    exhaustive search."""
    if records is not None:
        cfg = records.lookup(shape, machine)
        if cfg is not None:
            return cfg, time_program(matmul_program(shape, cfg, machine)), 0, "metaschedule"
    cfg, cycles, tried = best_config(shape, machine)
    return cfg, cycles, tried, "search"


def best_config(shape: MatmulShape, machine: Machine) -> tuple[TileConfig, int, int]:
    """(best config, its cycles, candidates tried); cached per shape and machine."""
    key = (shape, repr(machine))
    if key not in _CACHE:
        _CACHE[key] = _search(shape, machine)
    return _CACHE[key]


def _search(shape: MatmulShape, machine: Machine) -> tuple[TileConfig, int, int]:
    """Block sizes at double buffering first, then buffer depth 1 and 3 for the three best."""
    scored = []
    for cfg in candidate_configs(shape, machine) or [NAIVE]:
        scored.append((time_program(matmul_program(shape, cfg, machine)), cfg))
    scored.sort(key=lambda item: (item[0], -item[1].mb * item[1].nb))
    for _, cfg in scored[:3]:
        for depth in (1, 3):
            other = TileConfig(cfg.mb, cfg.nb, cfg.kb, depth)
            if fits(shape, other, machine):
                scored.append((time_program(matmul_program(shape, other, machine)), other))
    cycles, best = min(scored, key=lambda item: item[0])
    return best, cycles, len(scored)
