"""GPU latency: our CUDA builds vs PyTorch eager and torch.compile, in the same run on the same GPU.

    .venv/bin/python benchmarks/bench_gpu.py                           # bert-large s128 b1 + resnet50 b1, fp32 and fp16
    .venv/bin/python benchmarks/bench_gpu.py --models bert --size tiny --build-only   # no GPU: build + check the .so only

Needs a CUDA device for timing (``--build-only`` works anywhere nvcc is). The
target follows the device: compute capability 9.x -> gpu-hopper (sm_90a),
otherwise gpu-ampere (sm_80). fp16 is our ``--quantize fp16`` (matmul/conv
operands fp16, fp32 accumulation) against ``torch.autocast(float16)`` for
eager and torch.compile. Untuned builds use dlight's default GPU schedules;
pass ``--tuning-db`` for a MetaSchedule database tuned on this GPU.

PyTorch baselines need a CUDA build of torch; with a CPU-only torch they are
reported as skipped (the lent GPU machines have no network to install one).
Every number comes from this one process: medians over ``--repeat`` runs after
``--warmup``, device-synchronised. Results are appended to
benchmarks/results/gpu.md with the command line and the device name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.md"
ZOO_NAMES = {"bert": "bert", "resnet50": "resnet50"}
DEFAULT_SIZE = {"bert": "large", "resnet50": "base"}


def device_target() -> tuple[str, str]:
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        return "gpu-hopper", "no CUDA device"
    major = int(str(device.compute_version).split(".")[0])
    return ("gpu-hopper" if major == 9 else "gpu-ampere"), f"{device.device_name} (sm {device.compute_version})"


def time_ms(fn, sync, repeat: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "min_ms": times[0], "p90_ms": times[int(0.9 * (len(times) - 1))]}


def build_ours(onnx_path, target, shapes, precision, tuning_db, workdir: Path) -> tuple[Path, float]:
    import tvm_autoglm
    from tvm_autoglm.gpu import embedded_cuda_modules

    start = time.perf_counter()
    model = tvm_autoglm.compile(
        onnx_path, target=target, input_shapes=shapes, tuning_db=tuning_db, quantize="none" if precision == "fp32" else precision
    )
    out = model.export(workdir / f"{Path(onnx_path).stem}-{target}-{precision}.so")
    seconds = time.perf_counter() - start
    arches = sorted({i.arch for m in embedded_cuda_modules(out) for i in m["images"] if i.kind == "sass"})
    print(f"  built {out.name} in {seconds:.1f} s; SASS for {', '.join(arches)}", flush=True)
    return out, seconds


def run_ours(path: Path, inputs: dict, repeat: int, warmup: int) -> tuple[dict, dict]:
    import tvm_autoglm

    model = tvm_autoglm.load(path)
    outputs = model.run(inputs)
    session = model._session
    arrays = session._to_device([inputs[s["name"]] for s in session.input_specs])
    fn = session.vm["main"]
    return time_ms(lambda: fn(*arrays), session.device.sync, repeat, warmup), outputs


def torch_baselines(name, size, seq, batch, inputs, precisions, repeat, warmup) -> tuple[dict, dict]:
    """{(variant, precision): stats} for eager and torch.compile, plus eager outputs for the accuracy column."""
    try:
        import torch
    except ImportError:
        return {}, {"skipped": "torch not installed"}
    if not torch.cuda.is_available():
        return {}, {"skipped": f"torch {torch.__version__} has no CUDA"}
    from tvm_autoglm import zoo

    module = zoo.torch_module(ZOO_NAMES[name], size, seq, batch).cuda().eval()
    args = [torch.from_numpy(inputs[k]).cuda() for k in zoo.MODELS[ZOO_NAMES[name]].inputs]
    results, reference = {}, {}
    compiled = torch.compile(module)
    for precision in precisions:
        ctx = (lambda: torch.autocast("cuda", dtype=torch.float16)) if precision == "fp16" else torch.no_grad
        for variant, fn in (("eager", module), ("torch.compile", compiled)):

            def call(fn=fn, ctx=ctx):
                with torch.no_grad(), ctx():
                    return fn(*args)

            results[(variant, precision)] = time_ms(call, torch.cuda.synchronize, repeat, warmup)
        if precision == "fp32":
            out = call(module)
            out = out if isinstance(out, (tuple, list)) else (out,)
            reference = {k: v.float().cpu().numpy() for k, v in zip(zoo.MODELS[ZOO_NAMES[name]].outputs, out)}
    return results, reference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,resnet50", help="comma list of bert, resnet50")
    parser.add_argument("--size", default=None, help="zoo size (default: large for bert, base for resnet50)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--target", default=None, help="default: from the device (gpu-hopper for sm_9x, else gpu-ampere)")
    parser.add_argument("--tuning-db", default=None)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--build-only", action="store_true", help="compile and check the .so; no timing (no GPU needed)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/gpu.md")
    args = parser.parse_args(argv)

    from tvm_autoglm import zoo

    target, device = device_target()
    target = args.target or target
    if not args.build_only and device == "no CUDA device":
        print("bench_gpu: no CUDA device on this machine; use --build-only to just build", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    rows, report = [], {"device": device, "target": target, "command": " ".join(sys.argv), "models": {}}
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        size = args.size or DEFAULT_SIZE[name]
        zname = ZOO_NAMES[name]
        onnx_path = zoo.cached(zname, size, args.seq, args.batch)
        shapes = zoo.input_shapes(zname, size, args.seq, args.batch)
        inputs = zoo.example_inputs(zname, size, args.seq, args.batch)
        label = f"{name}-{size}" + (f" s{args.seq}" if zoo.MODELS[zname].uses_seq else "") + f" b{args.batch}"
        print(f"{label}: target {target}, device {device}", flush=True)
        entry = report["models"].setdefault(label, {})
        ours = {}
        for precision in precisions:
            path, build_s = build_ours(onnx_path, target, shapes, precision, args.tuning_db, workdir)
            entry[f"build_s_{precision}"] = round(build_s, 1)
            if not args.build_only:
                ours[precision] = run_ours(path, inputs, args.repeat, args.warmup)
        if args.build_only:
            continue
        torch_stats, reference = torch_baselines(name, size, args.seq, args.batch, inputs, precisions, args.repeat, args.warmup)
        if "skipped" in reference:
            entry["torch"] = reference["skipped"]
        for precision, (stats, outputs) in ours.items():
            err = None
            if reference and "skipped" not in reference:
                err = max(float(np.max(np.abs(outputs[k] - reference[k]))) for k in reference if k in outputs)
            rows.append((label, "tvm_autoglm", precision, stats["median_ms"], stats["p90_ms"], err))
            entry[f"tvm_autoglm_{precision}"] = {**stats, "max_abs_err_vs_torch_fp32": err}
        for (variant, precision), stats in torch_stats.items():
            rows.append((label, variant, precision, stats["median_ms"], stats["p90_ms"], None))
            entry[f"{variant}_{precision}"] = stats
    print(json.dumps(report, indent=2))
    if rows and not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"\n## {time.strftime('%Y-%m-%d')} {device}, target {target}\n", f"`{report['command']}`\n", ""]
        lines += ["| model | engine | precision | median ms | p90 ms | max abs err vs torch fp32 |", "|---|---|---|---|---|---|"]
        for label, engine, precision, median, p90, err in rows:
            lines.append(f"| {label} | {engine} | {precision} | {median:.3f} | {p90:.3f} | {'' if err is None else f'{err:.2e}'} |")
        if any(isinstance(v.get("torch"), str) for v in report["models"].values()):
            lines.append("\nPyTorch baselines skipped: " + "; ".join({v['torch'] for v in report['models'].values() if 'torch' in v}))
        with RESULTS.open("a") as handle:
            handle.write("\n".join(lines) + "\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
