"""The in-model veto list of a tuning database: which kernels keep their default schedule.

Written by the in-model check (``in_model.check``) after tuning, read when records are
applied (``apply.apply_tuning_records``) and shipped (``shipping``). Kept apart from the
check itself, which compiles models, so applying records never imports the compile flow.
"""

from __future__ import annotations

import json
from pathlib import Path

VETO_FILE = "in_model_veto.json"


def workload_key(func) -> str:
    """A kernel's identity across models: its structure, without its name."""
    import tvm_ffi

    for attr in ("global_symbol", "tirx.noalias", "tirx.is_scheduled"):
        if func.attrs is not None and attr in func.attrs:
            func = func.without_attr(attr)
    return str(tvm_ffi.structural_hash(func))


def read_vetoes(db_dir) -> dict:
    path = Path(db_dir) / VETO_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return dict(data.get("vetoed", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def write_vetoes(db_dir, vetoed: dict) -> None:
    from ..runtime.manifest import write_json_atomic

    write_json_atomic(Path(db_dir) / VETO_FILE, {"format": 1, "vetoed": vetoed})
