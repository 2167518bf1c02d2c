"""A tiny hand-built ONNX model for tuning tests: two GEMMs with bias and a ReLU.

Small enough that one trial builds and runs in about a second, big enough that
the fused module has two distinct tunable kernels.
"""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model
from onnx import helper, numpy_helper


def tiny_mlp(path, m: int = 32, k: int = 64, n: int = 64, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) * 0.1, "w1")
    b1 = numpy_helper.from_array(rng.standard_normal((n,)).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((n, k)).astype(np.float32) * 0.1, "w2")
    b2 = numpy_helper.from_array(rng.standard_normal((k,)).astype(np.float32) * 0.1, "b2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    model = make_model(nodes, {"x": [m, k]}, {"y": [m, k]}, [w1, b1, w2, b2], name="tiny_mlp")
    onnx.save(model, str(path))
    return str(path)


def scheduled_bodies(model, db_dir):
    """(build, {kernel name: scheduled PrimFunc body}, tuning info) after applying ``db_dir`` (None: default rules only)."""
    import tvm

    from tvm_autoglm.pipeline import build_relax, schedule

    build = build_relax(model, "cpu", 3)
    scheduled = schedule(build, str(db_dir) if db_dir else None, use_shipped_schedules=False)
    bodies = {gv.name_hint: f.body for gv, f in scheduled.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    return build, bodies, scheduled.tuning


def same_structure(a, b) -> bool:
    import tvm

    try:
        tvm.ir.assert_structural_equal(a, b)
        return True
    except (AssertionError, ValueError):
        return False
