"""Matmul rule on a symbolic row extent (a dynamic build's ``seq``): full register tiles, no
per-element bounds check in the hot loop, one build right at every row count.

The rows are padded to a multiple of the tile (``schedule_rules/symbolic_rows.py``). Parity is
checked from ONE build at rows 1, mr-1, mr, mr+1, an odd count and a long one, against numpy
float64 (the K sum is not reordered; rtol = atol = 1e-4 as in test_matmul.py). ``mr`` is derived
from the target (its lanes and register count), never from a build. AVX-512 is compile-only.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, tirx
import tvm.s_tir.stmt  # noqa: F401  (SBlock)

from tvm_autoglm.schedule_rules import schedule_func
from tvm_autoglm.schedule_rules import _common as C
from tvm_autoglm.schedule_rules import symbolic_rows
from tvm_autoglm.schedule_rules.matmul import tile_candidates
from tvm_autoglm.targets import load_target

from sched_helpers import build_fused, prim_funcs, symbolic_tile_structure, walk as _walk

RTOL = ATOL = 1e-4


def _tile_rows(target, n: int) -> int:
    """The register tile's row count the rule should pick for ``n`` columns on ``target``."""
    mr, _, _ = tile_candidates(symbolic_rows.NOMINAL_ROWS, n, C.vector_lanes(target, "float32"), C.num_vector_registers(target))[0]
    return mr


def _dense_mod(k: int, n: int, lead=(1,), epilogue=True, transposed=False, seed=0):
    """``x[*lead, seq, k] @ W (+ bias)``, seq symbolic; returns (fused module, W[k, n], b)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype("float32")
    b = rng.standard_normal(n).astype("float32")
    seq = tirx.Var("seq", "int64")

    def body(x):
        weight = relax.op.permute_dims(relax.const(np.ascontiguousarray(w.T))) if transposed else relax.const(w)
        y = relax.op.matmul(x, weight)
        return relax.op.add(y, relax.const(b)) if epilogue else y

    return build_fused(body, {"x": (*lead, seq, k)}), w, b


def _scheduled(mod, target):
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    rules = {}
    for name, func in prim_funcs(mod).items():
        new, rule = schedule_func(func, target)
        assert new is not None, name
        out[[gv for gv in mod.get_global_vars() if gv.name_hint == name][0]] = new
        rules[name] = (new, rule)
    return out, rules


def _run_rows(mod, target, w, b, lead, rows_list, epilogue=True):
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    rng = np.random.default_rng(1)
    for rows in rows_list:
        x = rng.standard_normal((*lead, rows, w.shape[0])).astype("float32")
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        ref = x.astype(np.float64) @ w.astype(np.float64) + (b.astype(np.float64) if epilogue else 0.0)
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=f"rows={rows}")


@pytest.mark.parametrize("k,n,lead,epilogue", [(40, 48, (1,), True), (33, 24, (1,), False), (16, 40, (2,), True)])
def test_symbolic_rows_parity_from_one_build(target, k, n, lead, epilogue):
    mr = _tile_rows(target, n)
    assert mr > 1
    mod, w, b = _dense_mod(k, n, lead, epilogue)
    scheduled, rules = _scheduled(mod, target)
    assert [r for _, r in rules.values()] == ["Matmul"]
    _run_rows(scheduled, target, w, b, lead, [1, mr - 1, mr, mr + 1, 2 * mr + 3, 97], epilogue)


def test_symbolic_rows_have_full_tiles_and_no_bounds_check_in_the_hot_loop(target):
    k, n = 40, 48
    mr = _tile_rows(target, n)
    mod, _, _ = _dense_mod(k, n)
    _, rules = _scheduled(mod, target)
    (func, _), = rules.values()
    lanes = C.vector_lanes(target, "float32")
    width = [nv * lane for m, nv, lane in tile_candidates(symbolic_rows.NOMINAL_ROWS, n, lanes, C.num_vector_registers(target))][0]
    symbolic_tile_structure(func, target, mr, width)


def test_transposed_weight_symbolic_rows(target):
    """NT layout (W stored [n, k]): same padded tile, same parity."""
    mod, w, b = _dense_mod(24, 32, transposed=True)
    scheduled, _ = _scheduled(mod, target)
    mr = _tile_rows(target, 32)
    _run_rows(scheduled, target, w, b, (1,), [1, mr + 1, 29])


def test_avx512_symbolic_rows_compile_only():
    """16 lanes, 32 registers: the tile (derived from the target) is padded the same way; the hot
    loop has no bounds check. Compiled to assembly, never run (the host may lack AVX-512)."""
    target = load_target("cpu-x86-avx512").tvm_target()
    k, n = 64, 64
    mr = _tile_rows(target, n)
    lanes = C.vector_lanes(target, "float32")
    assert lanes == 16 and mr > 1
    width = [nv * lane for _, nv, lane in tile_candidates(symbolic_rows.NOMINAL_ROWS, n, lanes, C.num_vector_registers(target))][0]
    mod, _, _ = _dense_mod(k, n)
    scheduled, rules = _scheduled(mod, target)
    (func, rule), = rules.values()
    assert rule == "Matmul"
    symbolic_tile_structure(func, target, mr, width)
    asm = _kernel_asm(scheduled, target)
    assert "zmm" in asm and "vfmadd" in asm


def test_plan512_symbolic_rows_run_on_avx2():
    """The AVX-512 tiling (16-lane plan, 32 registers), run on any AVX2 host for parity."""
    from pathlib import Path

    target = load_target(str(Path(__file__).resolve().parent.parent / "targets" / "cpu-x86-avx2-plan512.json")).tvm_target()
    assert C.vector_lanes(target, "float32") == 16
    mr = _tile_rows(target, 64)
    mod, w, b = _dense_mod(48, 64)
    scheduled, _ = _scheduled(mod, target)
    _run_rows(scheduled, target, w, b, (1,), [1, mr - 1, mr, mr + 1, 53])


def _kernel_asm(mod, target) -> str:
    """Assembly of the module's kernels (the llvm module the VM executable imports)."""
    lib = tvm.compile(mod, target).mod
    mods = [lib] + list(getattr(lib, "imports", []) or getattr(lib, "imported_modules", []))
    out = []
    for m in mods:
        try:
            out.append(m.inspect_source("asm"))
        except Exception:  # pylint: disable=broad-except  (a module kind without assembly)
            pass
    return "\n".join(out)


# --- declines: each branch falls back to the 1-row walk (no padding), still right ---


def _pads(func) -> list:
    return [b for b in _walk(func.body, s_tir.stmt.SBlock) if b.name_hint.endswith("_pad")]


def test_symbolic_axis_read_by_both_operands_is_not_padded(target):
    """A batch axis both operands read (``A[seq, 1, k] @ B[seq, k, n]``) is no row to tile:
    the rule keeps the 1-row walk (no pad block), and the result is right."""
    seq = tirx.Var("seq", "int64")
    mod = build_fused(lambda a, b: relax.op.matmul(a, b), {"a": (seq, 1, 16), "b": (seq, 16, 24)})
    scheduled, rules = _scheduled(mod, target)
    (func, rule), = rules.values()
    assert rule == "Matmul" and not _pads(func)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target), tvm.cpu())
    rng = np.random.default_rng(2)
    for rows in (1, 5):
        a = rng.standard_normal((rows, 1, 16)).astype("float32")
        bb = rng.standard_normal((rows, 16, 24)).astype("float32")
        got = vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(bb)).numpy()
        np.testing.assert_allclose(got, a.astype(np.float64) @ bb.astype(np.float64), rtol=RTOL, atol=ATOL)


def test_refused_padding_falls_back_to_the_row_walk(target, monkeypatch):
    """Where TVM refuses ``pad_einsum`` the rule starts over unpadded: no pad block, same parity."""

    def refuse(self, *_args, **_kwargs):
        raise RuntimeError("pad_einsum refused (test)")

    monkeypatch.setattr(s_tir.Schedule, "pad_einsum", refuse)
    mod, w, b = _dense_mod(40, 48)
    scheduled, rules = _scheduled(mod, target)
    (func, rule), = rules.values()
    assert rule == "Matmul" and not _pads(func)
    _run_rows(scheduled, target, w, b, (1,), [1, 5, 13])


def test_pad_rows_raises_not_padded_on_refusal(target, monkeypatch):
    """The decline is an exception the rule catches, naming the block (not a silent half-padded schedule)."""
    monkeypatch.setattr(s_tir.Schedule, "pad_einsum", lambda self, *a, **k: (_ for _ in ()).throw(ValueError("no")))
    mod, _, _ = _dense_mod(40, 48)
    (func,) = prim_funcs(mod).values()
    sch = s_tir.Schedule(func)
    block = [b for b in _walk(func.body, s_tir.stmt.SBlock) if b.name_hint == "matmul"]
    assert block
    with pytest.raises(symbolic_rows.NotPadded, match="matmul: no"):
        symbolic_rows.pad_rows(sch, sch.get_sblock("matmul"), 1, 4, [])


def test_static_rows_are_not_padded(target):
    """Static rows keep the exact-divisor tiling (nothing changes for static builds)."""
    mod = build_fused(lambda x: relax.op.matmul(x, relax.const(np.ones((16, 24), "float32"))), {"x": (1, 12, 16)})
    _, rules = _scheduled(mod, target)
    (func, _), = rules.values()
    assert not _pads(func)
