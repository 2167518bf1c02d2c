"""Per-layer precision rewrite of constant-weight matmuls (int8 dynamic, fp16, bf16, fp32).

int8 follows onnxruntime's ``quantize_dynamic``: weights are quantized once at
compile time, activations at run time, so no calibration is needed.

- weight ``W[K, N]``: symmetric int8 per output channel,
  ``s_w[n] = max_k |W[k, n]| / 127``, ``W_q = round(W / s_w)``;
- activation ``x``: symmetric int8 per tensor, computed in the graph on every
  run, ``s_x = max|x| / 127``, ``x_q = clip(round(x / s_x), -127, 127)``;
- ``R.matmul(x_q, W_q, out_dtype="int32")`` accumulates exactly in int32 and the
  result is dequantized by ``s_x * s_w[n]``.

(onnxruntime uses *asymmetric uint8* activations; symmetric int8 keeps the
int8 x int8 -> int32 product free of zero-point correction terms at the cost of
one bit of range on one-sided activations such as post-GELU values.)

It rewrites high-level Relax ops, so it runs on the module *before* fusion
(``unfused_module``, kept by the pipeline); fusion is re-run afterwards. Only
matmuls whose right operand is a 2-D float32 constant are sites: attention's
activation x activation matmuls stay fp32.

A *probe* module is the same rewrite with every precision computed side by side
and one selected per site by an extra ``int32[L]`` input (0 fp32, 1 int8,
2 fp16, 3 bf16 where asked for; int8 simulated exactly in fp32, see ``int8_matmul``): the sensitivity search (``sensitivity.py``) compiles it once and tries
any per-layer assignment by changing that input, instead of compiling L times.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from ..errors import AutoGLMError, CompileError, stage_errors
from ..ir_utils import copy_module, op_histogram, static_shape
from ..fusion import fuse_module
from ..pass_report import PassReport
from ..progress import StageLog
from . import pack_vnni
from .kernel_choice import use_bf16_kernel
from .pack_bf16 import pack_bf16_matmuls
from .pack import pack_weight, packable, quantized_packed_matmul_te, target_has_avx2

PRECISIONS = ("fp32", "int8", "fp16", "bf16")  # probe flag value = index
FLAG = {name: i for i, name in enumerate(PRECISIONS)}
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W[K, N]`` -> (int8 ``W_q[K, N]``, float32 ``s_w[N]``), symmetric per output channel."""
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return wq, scale


def _const_weight(expr) -> np.ndarray | None:
    """The float32 2-D constant behind a matmul's right operand (also through a 2-D transpose)."""
    if isinstance(expr, Constant):
        data = expr.value.numpy()
        return data if data.ndim == 2 and data.dtype == np.float32 else None
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.permute_dims":
        inner = _const_weight(expr.args[0])
        axes = expr.attrs.axes
        if inner is not None and (axes is None or [int(a) for a in axes] == [1, 0]):
            return np.ascontiguousarray(inner.T)
    return None


def _site(call) -> np.ndarray | None:
    """The weight if ``call`` is a float32 activation x constant-weight matmul we can quantize."""
    if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
        return None
    x_info = call.args[0].ty
    out_dtype = call.attrs.out_dtype
    if not isinstance(x_info, relax.TensorType) or x_info.dtype != "float32" or x_info.ndim < 1:
        return None
    if out_dtype not in (None, "", "float32", "void"):
        return None
    return _const_weight(call.args[1])


def int8_matmul(emit, x, wq: np.ndarray, sw: np.ndarray, simulate: bool = False, call_te=None, vnni: bool = False,
                packed: bool = True):
    """Dynamic int8 matmul of float32 ``x`` with a pre-quantized weight, dequantized to float32.

    ``simulate``: the same integers held in float32 and multiplied by the float
    matmul (products and sums of int8 values are exact in fp32 up to 2**24, so
    this equals the int32 result except for sums beyond 16.7M, i.e. only in
    extreme cases at K > 1000). The sensitivity probe uses it because the float
    matmul has a fast default schedule; the real build uses int8 x int8 -> int32.

    ``call_te`` (the block builder's, given on AVX2 CPU targets): the integer
    matmul reads int16 operands and a weight pre-packed for ``vpmaddwd``
    (``pack.py``) instead of ``R.matmul`` on int8; same integers, same int32 sums.
    ``vnni`` (with ``call_te``, on AVX-512 VNNI targets): uint8-shifted activations x int8 weight
    packed for ``vpdpbusd`` with the shift compensated (``pack_vnni.py``), where the weight's N is a
    multiple of 16; other weights take the int16 kernel (if ``packed``) or the plain matmul as above.
    """
    f32 = lambda v: relax.const(v, "float32")  # noqa: E731
    amax = emit(relax.op.max(relax.op.abs(x)))
    sx = emit(relax.op.divide(relax.op.maximum(amax, f32(1e-30)), f32(127.0)))
    if not simulate and call_te is not None and vnni and _vnni_shape(x, wq) is not None:
        acc = emit(relax.op.astype(_vnni_int_matmul(emit, call_te, x, sx, wq), "float32"))
        return relax.op.multiply(acc, relax.op.multiply(sx, relax.const(sw, "float32")))
    if not simulate and call_te is not None and packed and _packed_shape(x, wq) is not None:
        acc = emit(relax.op.astype(_packed_int_matmul(emit, call_te, x, sx, wq), "float32"))
        return relax.op.multiply(acc, relax.op.multiply(sx, relax.const(sw, "float32")))
    grid = emit(relax.op.clip(relax.op.round(relax.op.divide(x, sx)), -127.0, 127.0))
    if simulate:
        acc = emit(relax.op.matmul(grid, relax.const(wq.astype(np.float32), "float32")))
    else:
        acc = emit(relax.op.astype(relax.op.matmul(emit(relax.op.astype(grid, "int8")), relax.const(wq, "int8"), out_dtype="int32"), "float32"))
    return relax.op.multiply(acc, relax.op.multiply(sx, relax.const(sw, "float32")))


def _packed_shape(x, wq: np.ndarray) -> list[int] | None:
    """x's static shape if the packed int16 kernel can take it (2-D weight that packs, static activation)."""
    shape = static_shape(x)
    if shape is None:  # symbolic or unknown shape
        return None
    shape = list(shape)
    if not shape or shape[-1] != wq.shape[0] or not packable(*wq.shape):
        return None
    return shape


def _vnni_shape(x, wq: np.ndarray) -> list[int] | None:
    """x's static shape if the VNNI kernel can take it (N a multiple of 16, static activation)."""
    shape = static_shape(x)
    if shape is None:
        return None
    shape = list(shape)
    if not shape or shape[-1] != wq.shape[0] or not pack_vnni.packable(*wq.shape):
        return None
    return shape


def _vnni_int_matmul(emit, call_te, x, sx, wq: np.ndarray):
    """int32 ``quantize(x, sx) @ wq`` in one kernel: uint8-shifted activations x weight packed for vpdpbusd."""
    return emit(call_te(pack_vnni.quantized_vnni_matmul_te, x, sx, relax.const(pack_vnni.pack_weight(wq), "int8"),
                        relax.const(pack_vnni.compensation(wq), "int32"), primfunc_name_hint="vnni_u8s8_matmul"))


def _packed_int_matmul(emit, call_te, x, sx, wq: np.ndarray):
    """int32 ``quantize(x, sx) @ wq`` in one kernel: int16 activations x weight packed for vpmaddwd, [..., K] -> [..., N]."""
    return emit(call_te(quantized_packed_matmul_te, x, sx, relax.const(pack_weight(wq), "int16"), primfunc_name_hint="int16_packed_matmul"))


def fp16_matmul(emit, x, w: np.ndarray):
    """fp16 operands, fp32 accumulation and output (the ``--quantize fp16`` policy, one layer)."""
    return relax.op.matmul(emit(relax.op.astype(x, "float16")), relax.const(w.astype(np.float16), "float16"), out_dtype="float32")


def bf16_matmul(emit, x, w: np.ndarray):
    """bf16 operands, fp32 accumulation and output (``--quantize bf16``'s policy, one layer).

    numpy has no bfloat16: the weight is cast in the graph, and FoldConstant (fusion at O1+)
    turns that cast into a bf16 constant.
    """
    return relax.op.matmul(emit(relax.op.astype(x, "bfloat16")), emit(relax.op.astype(relax.const(w), "bfloat16")), out_dtype="float32")


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Rewrites every site by ``plan[i]`` (a precision name), or into a probe selected by ``flags``."""

    def __init__(self, mod, plan=None, flags=None, packed: bool = False, bf16: bool = False, vnni: bool = False):
        super().__init__(mod)
        self.plan = plan
        self.flags = flags
        self.packed = packed
        self.vnni = vnni
        self.bf16 = bf16  # probe only: also compute a bf16 variant per site
        self.sites: list[dict] = []

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        w = _site(call)
        if w is None:
            return call
        index = len(self.sites)
        self.sites.append({"index": index, "weight_shape": [int(d) for d in w.shape], "out_shape": _shape(call)})
        x = call.args[0]
        emit = self.builder_.emit
        if self.flags is None:
            precision = self.plan[index] if self.plan is not None else "int8"
            if precision == "int8":
                call_te = self.builder_.call_te if (self.packed or self.vnni) else None
                return int8_matmul(emit, x, *quantize_weight(w), call_te=call_te, vnni=self.vnni, packed=self.packed)
            if precision == "fp16":
                return fp16_matmul(emit, x, w)
            if precision == "bf16":
                return bf16_matmul(emit, x, w)
            return call
        # probe: all three computed, one chosen per run by flags[index]
        fp32 = emit(call)
        q8 = emit(int8_matmul(emit, x, *quantize_weight(w), simulate=True))
        h16 = emit(fp16_matmul(emit, x, w))
        flag = emit(relax.op.take(self.flags, relax.const(index, "int64"), axis=0))
        is8 = emit(relax.op.equal(flag, relax.const(FLAG["int8"], "int32")))
        is16 = emit(relax.op.equal(flag, relax.const(FLAG["fp16"], "int32")))
        chosen = relax.op.where(is16, h16, emit(relax.op.where(is8, q8, fp32)))
        if not self.bf16:
            return chosen
        b16 = emit(bf16_matmul(emit, x, w))
        isb16 = emit(relax.op.equal(flag, relax.const(FLAG["bf16"], "int32")))
        return relax.op.where(isb16, b16, emit(chosen))


def _shape(call) -> list | None:
    shape = static_shape(call)
    return None if shape is None else list(shape)


def count_sites(mod: tvm.IRModule) -> list[dict]:
    """The quantizable matmul sites of ``main``, in rewrite order (dry run of the rewrite)."""
    rewriter = _Rewriter(mod, plan=None)
    rewriter.visit_expr(mod["main"])
    return rewriter.sites


def rewrite(mod: tvm.IRModule, plan: list[str] | None = None, packed: bool = False, vnni: bool = False) -> tuple[tvm.IRModule, list[dict]]:
    """``main`` with site i at ``plan[i]`` (default: every site int8); returns (module, sites).

    ``packed``: int8 sites use the int16 vpmaddwd kernel with pre-packed weights
    (``pack.py``; for AVX2 CPU targets, see :func:`use_packed`). ``vnni``: int8 sites whose
    weight's N is a multiple of 16 use the uint8 x int8 vpdpbusd kernel (``pack_vnni.py``; see
    :func:`use_vnni`), the others fall back to ``packed`` / plain.
    """
    rewriter = _Rewriter(mod, plan=plan, packed=packed, vnni=vnni)
    func = rewriter.visit_expr(mod["main"])
    rewriter.builder_.update_func(mod.get_global_var("main"), func)
    out = tvm.IRModule(dict(rewriter.builder_.get().functions.items()), attrs=mod.attrs)
    return out, rewriter.sites


def use_packed(spec) -> bool:
    """Whether ``spec`` (a TargetSpec) gets the packed int16 int8 kernel.

    Backends that pack int8 (the CPU's) on targets with AVX2: the CPU default rules schedule the packed kernel with
    ``Int8MatmulAVX2`` (``vpmaddwd``). That rule must stay in ``DEFAULT_RULES``
    ahead of ``Matmul`` - the generic rule schedules the packed kernel ~1.8x
    slower than the plain int8 ``R.matmul`` - which tests/quantize/test_pack.py
    checks rather than every build asking at run time.
    """
    from ..backends import for_target

    if not for_target(spec).packs_int8:
        return False
    try:
        return target_has_avx2(spec.tvm_target())
    except Exception:  # pylint: disable=broad-except
        return False


def use_vnni(spec) -> bool:
    """Whether ``spec`` (a TargetSpec) gets the uint8 x int8 ``vpdpbusd`` kernel: a CPU backend that packs
    int8, on a target whose mcpu has AVX-512 VNNI (``Int8MatmulVNNI`` schedules it; it precedes
    ``Int8MatmulAVX2`` and ``Matmul`` in ``DEFAULT_RULES``). Asked of the target, never the host."""
    from ..backends import for_target

    if not for_target(spec).packs_int8:
        return False
    try:
        return pack_vnni.target_has_vnni(spec.tvm_target())
    except Exception:  # pylint: disable=broad-except
        return False


def probe_module(mod: tvm.IRModule, bf16: bool = False) -> tuple[tvm.IRModule, list[dict]]:
    """``main`` with an extra last input ``quant_flags: int32[L]`` choosing each site's precision at run time (bf16 too if asked)."""
    count = len(count_sites(mod))
    flags = relax.Var("quant_flags", relax.TensorType((max(count, 1),), "int32"))
    rewriter = _Rewriter(mod, flags=flags, bf16=bf16)
    main = mod["main"]
    body = rewriter.visit_expr(main.body)
    attrs = dict(main.attrs.items()) if main.attrs is not None else {}
    if "num_input" in attrs:
        attrs["num_input"] = int(attrs["num_input"]) + 1
    func = relax.Function(list(main.params) + [flags], body, main.ret_ty, main.is_pure, tvm.ir.make_node("ir.DictAttrs", **attrs) if attrs else None)
    out = copy_module(mod)
    out["main"] = func
    return out, rewriter.sites


_FUSION = ("fuse_ops", "legalize_ops")


def unfused_module(build) -> tvm.IRModule:
    """The build's Relax module after our passes and before fusion (kept by the pipeline)."""
    if build.pre_fusion_mod is None:
        raise CompileError("quantization needs the build's pre-fusion module, and this build has none")
    return build.pre_fusion_mod


def _fuse(build, mod: tvm.IRModule) -> tvm.IRModule:
    return fuse_module(mod, build.target, 1 if "fuse_ops" in build.passes else 0)


def describe_sites(sites: list[dict], plan: list[str]) -> list[dict]:
    """Manifest rows: one per site with its weight shape, precision and weight bytes at that precision."""
    rows = []
    for site, precision in zip(sites, plan):
        k, n = site["weight_shape"]
        rows.append({"layer": f"matmul_{site['index']}", "weight_shape": [k, n], "out_shape": site["out_shape"], "precision": precision,
                     "weight_bytes": k * n * WEIGHT_BYTES[precision]})
    return rows


def apply_plan(build, plan: list[str] | None, record: dict, label: str, log=None):
    """Rebuild ``build`` from its unfused module with each site at ``plan[i]`` (None: all int8), then fuse again."""
    log = log or StageLog(enabled=False)
    with log.stage(f"quantize ({label})"):
        with stage_errors(f"--quantize {label} on target {build.target.name}"):
            mod = unfused_module(build)
            before = op_histogram(mod)
            start = time.perf_counter()
            mod, sites = rewrite(mod, plan, packed=use_packed(build.target), vnni=use_vnni(build.target))
            plan = plan or ["int8"] * len(sites)
            if "bf16" in plan and use_bf16_kernel(build.target):
                mod, _ = pack_bf16_matmuls(mod)  # auto's bf16 layers: vdpbf16ps kernels, as --quantize bf16's
            report = PassReport(f"quantize_{label}", time.perf_counter() - start, before, op_histogram(mod))
            mod = _fuse(build, mod)
    if not sites:
        raise AutoGLMError(f"--quantize {label}: the model has no matmul with a constant 2-D float32 weight to quantize", hint="use --quantize none or fp16")
    passes = [p for p in build.passes if p not in _FUSION] + [report.name] + [p for p in build.passes if p in _FUSION]
    reports = [r for r in build.pass_reports if r.name not in _FUSION] + [report] + [r for r in build.pass_reports if r.name in _FUSION]
    layers = describe_sites(sites, plan)
    counts = {p: plan.count(p) for p in ("int8", "fp16", "bf16", "fp32")}
    fp32_bytes = sum(r["weight_shape"][0] * r["weight_shape"][1] * 4 for r in layers)
    quantization = {"mode": label, **record, "layers": layers, "counts": counts,
                    "weight_bytes": sum(r["weight_bytes"] for r in layers), "weight_bytes_fp32": fp32_bytes}
    note = (f"precision: {label}: {counts['int8']} matmul layers int8 (dynamic per-tensor activations, per-channel weights, int32 accumulation), "
            f"{counts['fp16']} fp16, " + (f"{counts['bf16']} bf16, " if counts["bf16"] else "") + f"{counts['fp32']} fp32; details under manifest 'quantization'")
    return dataclasses.replace(build, mod=mod, passes=passes, pass_reports=reports, notes=[*build.notes, note], quantization=quantization)
