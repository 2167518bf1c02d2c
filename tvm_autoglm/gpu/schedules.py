"""Default GPU schedules (dlight) and the guard that every kernel runs on GPU threads.

On a CUDA target an unscheduled PrimFunc is not an error in TVM 0.27: the
device/host split finds no thread binding, so the whole loop nest is emitted
as *host* code that reads device pointers. The build succeeds and the artifact
crashes (or silently computes garbage) on the first run. So after scheduling
we walk every kernel and refuse the build if any has no ``blockIdx``/
``threadIdx`` binding, naming the kernels.
"""

from __future__ import annotations

import tvm

from ..errors import CompileError
from ..ir_utils import copy_module, is_scheduled

_THREAD_TAGS = ("blockIdx.", "threadIdx.")


def default_rules():
    """dlight's GPU rules, most specific first; ``Fallback`` catches every injective kernel.

    ``Matmul`` tensorizes on sm_70+ when the operands are fp16 (or int8) and
    every non-batch extent is above 64; otherwise it uses its SIMT tiling.
    """
    from tvm.s_tir import dlight as dl

    return (
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        dl.gpu.LowBatchGEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.RMSNorm(),
        dl.gpu.Transpose(),
        dl.gpu.Fallback(),
    )


def apply_gpu_default_schedules(mod: tvm.IRModule, target, rules=None) -> tvm.IRModule:
    """Schedule every kernel not already scheduled (e.g. by a tuning record), then check binding.

    Rules are tried in order per kernel, like ``dl.ApplyDefaultSchedule``, except that a rule
    that *raises* (several dlight rules assert on shapes they do not expect, e.g. Transpose on
    a fused reshape+transpose) is skipped for that kernel instead of failing the whole build.
    """
    if isinstance(target, dict):
        target = tvm.target.Target(target)
    rules = default_rules() if rules is None else tuple(rules)
    mod = copy_module(mod)
    if _has_tensor_core_dtypes(mod):
        preload_tensor_intrinsics()
    updates = {}
    rules_target = _rules_target(target)
    with rules_target:
        for gvar, func in mod.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or is_scheduled(func):
                continue
            sch, _rule = _first_schedule(func, rules_target, rules)
            if sch is not None:
                updates[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    for gvar, func in updates.items():
        mod[gvar] = func
    check_thread_bound(mod, str(target.attrs.get("arch", "cuda")))
    return mod


def _rules_target(target):
    """The target the rules see: ``sm_90a`` -> ``sm_90``.

    dlight parses the arch with ``int("90a")`` semantics (``check_sm_version``) and treats an
    arch-specific name as "no tensor cores", so Hopper builds silently lost tensor-core
    matmuls. The schedule does not depend on the suffix; codegen and nvcc still get sm_90a.
    """
    arch = str(target.attrs.get("arch", ""))
    if target.kind.name != "cuda" or not arch[-1:].isalpha():
        return target
    config = {k: v for k, v in target.export().items()}
    config["arch"] = arch.rstrip("abcdefghijklmnopqrstuvwxyz")
    return tvm.target.Target(config)


def default_gpu_schedule(func, target, rules=None):
    """``(Schedule, rule name)`` of the first dlight rule that binds the whole kernel, or ``(None, None)``.

    The ``Schedule`` (not just the scheduled function) is what tuning needs: its trace replays
    on the same workload, so ``tuning.baseline`` can measure dlight's schedule and commit it as
    the record every MetaSchedule candidate has to beat, as it does with our CPU rules.
    """
    if isinstance(target, dict):
        target = tvm.target.Target(target)
    if _has_tensor_core_dtypes(tvm.IRModule({"main": func})):
        preload_tensor_intrinsics()
    rules = default_rules() if rules is None else tuple(rules)
    rules_target = _rules_target(target)
    with rules_target:
        return _first_schedule(func, rules_target, rules)


def _first_schedule(func, target, rules):
    for rule in rules:
        try:
            space = rule.apply(func, target, False)
        except Exception:  # a dlight rule asserting on an unexpected kernel: try the next rule
            continue
        if space is None:
            continue
        if isinstance(space, (list, tuple)):
            if not space:
                continue
            space = space[0]
        if not is_thread_bound(space.mod["main"]):  # a partial schedule: let a later rule do all of it
            continue
        return space, type(rule).__name__
    return None, None


def _has_tensor_core_dtypes(mod: tvm.IRModule) -> bool:
    return any(
        str(getattr(param, "dtype", "")) in ("float16", "int8")
        for _, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc)
        for param in func.params
    )


def preload_tensor_intrinsics() -> None:
    """Import TVM's tensor-core intrinsics (needed by dlight's fp16 Matmul) the fast way.

    A plain import parses 248 TVMScript intrinsics with ``inspect.stack()`` each and took
    7.5 minutes inside a compile on the 2-core build box; see ``tuning.fastimport``.
    """
    from ..tuning.fastimport import preload_tensor_intrin

    preload_tensor_intrin()


def _children(stmt):
    for attr in ("body", "then_case", "else_case", "block", "init"):
        child = getattr(stmt, attr, None)
        if isinstance(child, tvm.tirx.Stmt):
            yield child
    seq = getattr(stmt, "seq", None)
    if seq is not None:
        yield from (s for s in seq if isinstance(s, tvm.tirx.Stmt))


def _binding_scan(func) -> tuple[bool, list[str]]:
    """One walk of a kernel: (has any GPU thread binding, names of the blocks under none)."""
    has_binding, found = False, []
    stack = [(func.body, False)]
    while stack:
        stmt, bound = stack.pop()
        if isinstance(stmt, tvm.tirx.For) and stmt.kind == tvm.tirx.ForKind.THREAD_BINDING:
            binding = stmt.thread_binding
            bound = bound or (binding is not None and str(binding.thread_tag).startswith(_THREAD_TAGS))
        if isinstance(stmt, tvm.tirx.AttrStmt) and stmt.attr_key == "thread_extent":
            bound = True
        has_binding = has_binding or bound
        block = getattr(stmt, "block", None)
        if block is not None and hasattr(block, "name_hint"):  # an SBlockRealize
            if not bound and block.name_hint != "root":
                found.append(block.name_hint)
            stack.append((block.body, bound))
            continue
        stack.extend((child, bound) for child in _children(stmt))
    return has_binding, sorted(set(found))


def unbound_blocks(func) -> list[str]:
    """Blocks of a kernel that sit under no GPU thread binding (each would run as host code).

    A rule can bind one block of a multi-block kernel and leave the rest: dlight's
    ``Transpose`` did that to ONNX GatherND (a transpose of the indices, then the gather),
    and the gather ran on the CPU, reading device pointers: bert-large segfaulted on an
    H200 at its first call. So every block must be bound, not just one.
    """
    return _binding_scan(func)[1]


def is_thread_bound(func) -> bool:
    """True if the kernel runs entirely on GPU threads: it has a binding and no block escapes it."""
    has_binding, unbound = _binding_scan(func)
    return has_binding and not unbound


def unbound_kernels(mod: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs that would run (wholly or partly) as host code on a CUDA target."""
    return sorted(
        gv.name_hint for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and not is_thread_bound(func)
    )


def check_thread_bound(mod: tvm.IRModule, what: str = "cuda") -> None:
    unbound = unbound_kernels(mod)
    if unbound:
        shown = ", ".join(unbound[:8]) + (f" and {len(unbound) - 8} more" if len(unbound) > 8 else "")
        raise CompileError(
            f"{len(unbound)} kernel(s) are not bound to GPU threads on {what} and would run as host code: {shown}",
            hint="no GPU schedule rule matched them; tune them (auto-glm tune) or report the model",
        )
