"""Applying tuning records (a user database and the shipped ones) to a fused module.

A record applies when its workload (the kernel's structural hash) matches, so
a database tuned on one model serves any other model with the same kernels.
MetaSchedule's query is by workload only: the target a record was measured on
(e.g. ``mcpu: znver3``) is not compared with the build's, which is what lets a
shipped record serve every CPU of its ISA family (``schedules/<family>/``,
``Backend.shipped_schedules_key``); ``tests/tuning/test_isa_family.py`` pins that
TVM behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

import tvm

from ..errors import AutoGLMError
from ..ir_utils import is_scheduled


def repo_schedules_dir() -> Path:
    """$AUTOGLM_SCHEDULES_DIR (tests, site-wide schedule sets), schedules/ in the source tree, or the packaged copy.

    A wheel carries the shipped databases as ``tvm_autoglm/_schedules`` (setup.py copies them in).
    """
    override = os.environ.get("AUTOGLM_SCHEDULES_DIR")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parent.parent
    repo = package.parent / "schedules"
    if repo.is_dir():
        return repo
    return package / "_schedules"


def shipped_databases(spec) -> list[Path]:
    """Shipped best-record databases this target may use: schedules/<key>/<model>/.

    The key is the backend's (``Backend.shipped_schedules_key``): the ISA family for CPU
    targets (``x86-avx2``: any AVX2+FMA CPU without AVX-512), the target name otherwise.
    """
    from ..backends import for_target

    key = for_target(spec).shipped_schedules_key(spec)
    if not key:
        return []
    root = repo_schedules_dir() / key
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/database_workload.json"))


def open_database(path: Path):
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    if not (path / "database_workload.json").is_file():
        raise AutoGLMError(f"tuning database {path} not found (expected {path / 'database_workload.json'})")
    from .database import repair

    repair(path)  # a run killed mid-write leaves a torn last line; skip it, keep the rest
    return ms.database.JSONDatabase(work_dir=str(path), allow_missing=False, module_equality="structural")


def apply_tuning_records(mod, spec, tuning_db, use_shipped: bool, honor_vetoes: bool = True):
    """Returns (module, info) with info: database, records_applied, shipped_schedules, vetoed.

    Kernels a database's in-model check vetoed (``vetoes.VETO_FILE``) keep their
    default schedule even though a record exists for them.
    """
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    paths: list[Path] = []
    if tuning_db:
        paths.append(Path(tuning_db))
    shipped = shipped_databases(spec) if use_shipped else []
    paths.extend(shipped)
    info = {"database": str(tuning_db) if tuning_db else None, "records_applied": 0, "shipped_schedules": [str(p) for p in shipped]}
    if not paths:
        return mod, info
    databases = [open_database(p) for p in paths]
    database = databases[0] if len(databases) == 1 else ms.database.UnionDatabase(*databases)
    target = spec.tvm_target()
    before = _scheduled(mod)
    original = mod
    with target, database, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if honor_vetoes:
        from .vetoes import read_vetoes, workload_key

        vetoes = {}
        for p in paths:
            vetoes.update(read_vetoes(p))
        if vetoes:
            restored = 0
            for gv, func in original.functions_items():
                if isinstance(func, tvm.tirx.PrimFunc) and workload_key(func) in vetoes:
                    mod[gv] = func  # back to unscheduled: the default rules take it
                    restored += 1
            info["vetoed"] = restored
    info["records_applied"] = _scheduled(mod) - before
    return mod, info


def _scheduled(mod) -> int:
    """Scheduled kernels of ``mod``."""
    return sum(1 for func in mod.functions.values() if isinstance(func, tvm.tirx.PrimFunc) and is_scheduled(func))
