"""Placing matmul(+bias)(+relu/gelu) on the NPU; everything else stays on the host.

Runs on the Relax graph before legalization, so it sees ops, not loops: each
supported ``R.matmul`` (with a constant bias ``add`` and an activation folded in
when present) becomes ``call_tir`` of a small PrimFunc. On the tensorize route
(the default, targets/npu-sim.json ``"route"``) that PrimFunc is the op's block
loop nest tensorized with the init, block-GEMM and epilogue intrinsics
(tensorize.py); on the program route its body is one ``npu_exec`` call, given
the op's instruction program as a constant. Block sizes / the tile
configuration are chosen by simulated cycles (a MetaSchedule record, else the
exhaustive search). Constant fp32 weights are stored as fp16, the
format the weight scratchpad holds anyway, halving their DMA bytes.
Unsupported matmuls (dynamic shapes, broadcast batch dims, other dtypes)
stay on the host and are listed with the reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .codegen import MatmulShape, matmul_program
from .config import Machine
from .settings import ROUTES, NpuSettings, default_settings
from .tensorize import act_intrin_name, best_block_config, block_intrin_name, block_kernel, config_words, init_intrin_name, time_blocks
from .tiling import choose

ATTR = "npu_op"
INFO_ATTR = "npu_info"
# Relax activations the vector unit applies before the store (gelu = erf form, as ONNX Gelu)
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def is_npu_kernel(func) -> bool:
    """Whether a PrimFunc is an offloaded NPU kernel (it carries the op-id attribute ``_finish`` sets)."""
    return isinstance(func, tirx.PrimFunc) and func.attrs is not None and ATTR in func.attrs


def _static_shape(expr) -> list[int] | None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None or not hasattr(sinfo.shape, "values"):
        return None
    try:
        return [int(v) for v in sinfo.shape.values]
    except TypeError:
        return None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


class _Offloader:
    def __init__(self, settings: NpuSettings, builder: relax.BlockBuilder):
        self.machine: Machine = settings.machine
        self.route = settings.route
        self.records = settings.records
        self.builder = builder
        self.funcs: dict[str, tirx.PrimFunc] = {}
        self.gvars: dict[str, tvm.ir.GlobalVar] = {}
        self.ops: list[dict] = []
        self.host: list[dict] = []

    def classify(self, call):
        """(MatmulShape fields, reason): reason is None when the NPU can run it."""
        a, b = call.args
        sa, sb = _static_shape(a), _static_shape(b)
        if sa is None or sb is None:
            return None, "dynamic shape"
        if len(sa) < 2 or len(sb) < 2:
            return None, "vector operand"
        out_dtype = str(call.attrs.out_dtype) if call.attrs is not None and str(call.attrs.out_dtype) not in ("", "void", "None") else _dtype(a)
        dts = (_dtype(a), _dtype(b), out_dtype)
        if dts not in (("float32", "float32", "float32"), ("int8", "int8", "int32")):
            return None, f"dtypes {dts[0]}x{dts[1]}->{dts[2]}"
        if sa[-1] != sb[-2]:
            return None, "mismatched K"
        batch_a = sa[:-2]
        if len(sb) > 2 and list(sb[:-2]) != list(batch_a):
            return None, "broadcast batch dims"
        batch = int(np.prod(batch_a)) if batch_a else 1
        return dict(batch=batch, m=sa[-2], n=sb[-1], k=sa[-1], b_batched=len(sb) > 2, a_dtype=dts[0], b_dtype=dts[1], out_dtype=dts[2]), None

    def rewrite(self, mm, bias=None, activation=None):
        fields, reason = self.classify(mm)
        if reason is not None:
            return None, reason
        a, b = mm.args
        n = fields["n"]
        if activation in ("gelu", "gelu_tanh") and fields["a_dtype"] == "int8":
            return None, "gelu epilogue on int8"
        if bias is not None:
            bshape = _static_shape(bias)
            if bshape is None or bshape[-1] != n or any(d != 1 for d in bshape[:-1]) or _dtype(bias) != fields["out_dtype"]:
                return None, "bias shape"
            bias = relax.const(bias.value.numpy().reshape(n))
        return self.emit(a, _static_shape(a), b, _static_shape(b), bias, activation, fields)

    def emit(self, a, a_shape, b, b_shape, bias, activation, fields, kind="matmul"):
        """The NPU call for A (..., M, K) x B (K, N) or (..., K, N); shapes given because
        ``a`` may be a fresh, not yet normalised expression (im2col)."""
        if isinstance(b, Constant) and fields["b_dtype"] == "float32":
            b = relax.const(b.value.numpy().astype(np.float16))
            fields["b_dtype"] = "float16"
        n = fields["n"]
        shape = MatmulShape(**fields, bias=bias is not None, activation=activation)
        op_id = len(self.ops)
        out_shape = list(a_shape[:-1]) + [n]
        name = f"npu_{kind}{'_bias' if bias is not None else ''}{'_' + activation if activation else ''}_{op_id}"
        specs = [(list(a_shape), fields["a_dtype"]), (list(b_shape), fields["b_dtype"])]
        if bias is not None:
            specs.append(([n], _dtype(bias)))
        info = {
            "op_id": op_id, "kernel": name, "kind": kind, "batch": shape.batch, "m": shape.m, "n": shape.n, "k": shape.k,
            "macs": shape.macs, "bias": shape.bias, "activation": activation, "dtype": fields["a_dtype"],
            "cores": self.machine.cores, "workload": dataclasses.asdict(shape),  # what ms_tune tunes
        }
        block = self._block_route(shape) if self.route == "tensorize" else None
        if block is not None:
            cfg, cycles, tried, source = block
            words = config_words(shape, cfg, self.machine, op_id)
            func = block_kernel(name, list(a_shape), list(b_shape), out_shape, shape, cfg, bias is not None, op_id)
            intrinsics = [init_intrin_name(cfg.bm, cfg.bn, shape.out_dtype, shape.bias),
                          block_intrin_name(cfg.bm, cfg.bn, cfg.bk, shape.a_dtype, shape.b_dtype, shape.out_dtype)]
            if activation:
                intrinsics.append(act_intrin_name(cfg.bm, cfg.bn, shape.out_dtype, activation))
            info.update(route="tensorize", intrinsic=intrinsics[1], intrinsics=intrinsics, instructions=0)
        else:
            cfg, cycles, tried, source = choose(shape, self.machine, self.records)
            words = matmul_program(shape, cfg, self.machine, op_id).array()
            func = _prim_func(name, specs + [(list(words.shape), "int32"), (out_shape, fields["out_dtype"])], words.shape[0], op_id)
            info.update(route="program", instructions=int(words.shape[0]))
            if self.route == "tensorize":
                info["route_note"] = "no block size fits: program route"
        info.update(tile=cfg.to_json(), tile_source=source, estimated_cycles=cycles, configs_tried=tried)
        args = [a, b] + ([bias] if bias is not None else []) + [relax.const(words)]
        func = _finish(func, name, op_id).with_attr(INFO_ATTR, json.dumps(info, sort_keys=True))
        self.funcs[name] = func
        self.gvars[name] = self.builder.add_func(func, name)
        self.ops.append(info)
        return relax.call_tir(self.gvars[name], args, relax.TensorType(out_shape, fields["out_dtype"])), None

    def _block_route(self, shape):
        """(BlockConfig, cycles, tried, source) for the tensorize route, or None where no block size fits.

        Bias and activation are intrinsics of their own (init: the bias row broadcast into the
        accumulator; epilogue: the activation on the vector unit before the store), so every op
        the NPU takes can use this route."""
        records = self.records
        if records is not None:
            cfg = records.lookup_block(shape, self.machine)
            if cfg is not None:
                return cfg, time_blocks(shape, cfg, self.machine), 0, "metaschedule"
        found = best_block_config(shape, self.machine)
        return None if found is None else (*found, "search")

    def rewrite_conv(self, conv, bias=None, activation=None):
        """conv2d (NCHW/OIHW, groups 1, no dilation, fp32) as im2col on the host + an NPU matmul.

        The column matrix is built with Relax ops (pad, strided slices, concat,
        transpose) that run on the host; every MAC of the convolution runs on
        the NPU. A 1x1 stride-1 convolution needs only a transpose.
        """
        x, w = conv.args
        attrs = conv.attrs
        if not isinstance(w, Constant):
            return None, "conv weight not constant"
        xs = _static_shape(x)
        if xs is None or len(xs) != 4 or _dtype(x) != "float32" or _dtype(w) != "float32":
            return None, "conv shape/dtype"
        if (str(attrs.data_layout), str(attrs.kernel_layout)) != ("NCHW", "OIHW") or int(attrs.groups) != 1 or any(int(d) != 1 for d in attrs.dilation):
            return None, "conv layout/groups/dilation"
        if str(attrs.out_dtype) not in ("", "void", "None", "float32"):
            return None, "conv out dtype"
        weight = w.value.numpy()
        n_, c, h, wd = xs
        o, _, kh, kw = weight.shape
        sh, sw = (int(v) for v in attrs.strides)
        pt, pl, pb, pr = (int(v) for v in attrs.padding)
        ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
        if bias is not None:
            bshape = _static_shape(bias)
            if bshape is None or int(np.prod(bshape)) != o or bshape[-3:] not in ([o, 1, 1],) or _dtype(bias) != "float32":
                return None, "conv bias shape"
            bias = relax.const(bias.value.numpy().reshape(o))
        if kh == kw == 1 and sh == sw == 1 and not any((pt, pl, pb, pr)):
            cols = relax.op.reshape(x, [n_, c, h * wd])
        else:
            padded = relax.op.nn.pad(x, [0, 0, 0, 0, pt, pb, pl, pr]) if any((pt, pl, pb, pr)) else x
            slices = [
                relax.op.strided_slice(padded, [2, 3], [i, j], [i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1], [sh, sw])
                for i in range(kh) for j in range(kw)
            ]
            cols = relax.op.reshape(relax.op.concat(slices, axis=1) if len(slices) > 1 else slices[0], [n_, kh * kw * c, ho * wo])
        a = relax.op.permute_dims(cols, [0, 2, 1])  # (N, Ho*Wo, Kh*Kw*C), index (i*Kw + j)*C + c
        b = relax.const(weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, o))
        fields = dict(batch=n_, m=ho * wo, n=o, k=kh * kw * c, b_batched=False, a_dtype="float32", b_dtype="float32", out_dtype="float32")
        call, _ = self.emit(a, [n_, ho * wo, kh * kw * c], b, [kh * kw * c, o], bias, activation, fields, kind="conv2d")
        return relax.op.reshape(relax.op.permute_dims(call, [0, 2, 1]), [n_, o, ho, wo]), None


def _prim_func(name, specs, n_insns, op_id):
    """``npu_exec(program, n, A, B, bias, out)``; built from TVMScript text (the
    0.27 PrimFunc constructor has no buffer_map, the parser builds it)."""
    names = ["A", "B", "Bias", "P", "Out"] if len(specs) == 5 else ["A", "B", "P", "Out"]
    params = ", ".join(f"{n}: T.Buffer(({', '.join(map(str, shp))},), \"{dt}\")" for n, (shp, dt) in zip(names, specs))
    bias = "Bias" if len(specs) == 5 else "A"
    source = (
        "@T.prim_func\n"
        f"def {name}({params}):\n"
        f"    T.call_extern(\"int32\", \"npu_exec\", P.data, {n_insns}, A.data, B.data, {bias}.data, Out.data)\n"
    )
    from tvm.script import tirx as T

    return tvm.script.from_source(source, extra_vars={"T": T})


def _finish(func, name, op_id):
    """Attributes every NPU kernel carries: born scheduled, opaque to FuseOps, its op id."""
    return func.with_attrs({"global_symbol": name, "tir.noalias": True, "tir.is_scheduled": True, "tirx.is_scheduled": True, "op_pattern": 8, ATTR: op_id})


def offload(mod: tvm.IRModule, settings: NpuSettings | None = None, offload_convs: bool = True) -> tuple[tvm.IRModule, dict]:
    """Rewrite every Relax function; returns the module and the partition summary.

    ``settings`` come from the target (``settings.settings_for``); without them, targets/npu-sim.json's."""
    settings = settings or default_settings()
    if settings.route not in ROUTES:
        raise ValueError(f"npu route must be one of {ROUTES} (got {settings.route!r})")
    machine, route = settings.machine, settings.route
    builder = relax.BlockBuilder(mod)
    off = _Offloader(settings, builder)
    reasons: dict = {}

    a, b, bias = wildcard(), wildcard(), is_const()
    mm = is_op("relax.matmul")(a, b)
    with_bias = is_op("relax.add")(mm, bias)
    patterns = []
    for act in ACTIVATIONS:  # fused epilogues first, so a bare matmul is the last resort
        patterns.append((is_op(f"relax.nn.{act}")(with_bias), lambda m, act=act: (m[mm], m[bias], act)))
    patterns.append((with_bias, lambda m: (m[mm], m[bias], None)))
    for act in ACTIVATIONS:
        patterns.append((is_op(f"relax.nn.{act}")(mm), lambda m, act=act: (m[mm], None, act)))
    patterns.append((mm, lambda m: (m[mm], None, None)))
    conv, cbias = is_op("relax.nn.conv2d")(wildcard(), is_const()), is_const()
    conv_bias = is_op("relax.add")(conv, cbias)
    conv_patterns = [(is_op("relax.nn.relu")(conv_bias), lambda m: (m[conv], m[cbias], "relu")), (conv_bias, lambda m: (m[conv], m[cbias], None)),
                     (is_op("relax.nn.relu")(conv), lambda m: (m[conv], None, "relu")), (conv, lambda m: (m[conv], None, None))]

    def make_rewriter(extract, method, last):
        def rewriter(expr, matches):
            call, bias_expr, act = extract(matches)
            new, reason = method(call, bias_expr, act)
            if new is None:
                if extract is last:
                    reasons[call] = reason  # the rewriter may see one call more than once
                return expr
            return new

        return rewriter

    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        if func.attrs is not None and any(key in func.attrs for key in ("Composite", "Primitive", "Codegen")):
            continue  # a fused group another pass made (e.g. attention) stays whole, on the host
        for pattern, extract in patterns:
            func = rewrite_call(pattern, make_rewriter(extract, off.rewrite, patterns[-1][1]), func)
        if offload_convs:
            for pattern, extract in conv_patterns:
                func = rewrite_call(pattern, make_rewriter(extract, off.rewrite_conv, conv_patterns[-1][1]), func)
        updates[gv] = func
    mod = builder.get()
    for gv, func in updates.items():
        mod[gv] = func
    mod = relax.transform.DeadCodeElimination()(mod) if off.ops else mod
    summary = {
        "machine": {"cores": machine.cores, "clock_mhz": machine.clock_mhz},
        "route": route,
        "npu_ops": off.ops,
        "kept_on_host": [{"reason": r, "count": c} for r, c in sorted(Counter(reasons.values()).items())],
    }
    return mod, summary


def npu_ops(mod: tvm.IRModule) -> list[dict]:
    """The offloaded ops of a module (any stage after the offload pass), by op id."""
    ops = []
    for _, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and INFO_ATTR in func.attrs:
            ops.append(json.loads(str(func.attrs[INFO_ATTR])))
    return sorted(ops, key=lambda op: op["op_id"])


def summary_from_module(mod: tvm.IRModule) -> dict:
    """Which kernels of a (scheduled) module run on the NPU and which on the host."""
    npu, host = [], []
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            (npu if func.attrs is not None and ATTR in func.attrs else host).append(gv.name_hint)
    return {"npu_kernels": sorted(npu), "host_kernels": sorted(host), "npu_ops": npu_ops(mod)}


def partition_notes(mod: tvm.IRModule) -> list[str]:
    """One line per kernel saying where it runs (for build.notes / ``auto-glm inspect``)."""
    summary = summary_from_module(mod)
    lines = []
    for op in summary["npu_ops"]:
        tile = op["tile"]
        epilogue = "".join(["+bias" if op["bias"] else "", f"+{op['activation']}" if op["activation"] else ""])
        lines.append(
            f"npu-sim: NPU  {op['kernel']}: {op.get('kind', 'matmul')}{epilogue}{' (im2col matmul)' if op.get('kind') == 'conv2d' else ''} {op['batch']}x{op['m']}x{op['n']}x{op['k']} {op['dtype']}, "
            f"tile {tile['mb']}x{tile['nb']}x{tile['kb']} depth {tile['depth']} ({op.get('tile_source', 'search')}), {op['cores']} core(s), ~{op['estimated_cycles']} cycles, "
            + (f"tensorized ({', '.join(op.get('intrinsics') or [op['intrinsic']])})" if op.get("route") == "tensorize" else f"program route{' (' + op['route_note'] + ')' if op.get('route_note') else ''}")
        )
    for name in summary["host_kernels"]:
        lines.append(f"npu-sim: HOST {name}")
    return lines
