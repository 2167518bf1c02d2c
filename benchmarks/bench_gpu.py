"""GPU latency: our CUDA builds vs PyTorch eager and torch.compile, in the same run on the same GPU.

    .venv/bin/python benchmarks/bench_gpu.py                           # bert-large s128 b1 + resnet50 b1, fp32 and fp16
    .venv/bin/python benchmarks/bench_gpu.py --models bert --size tiny --build-only   # no GPU: build + check the .so only
    benchmarks/gpu_session.sh                                          # what ran on the lent GPU (carried TVM, tests, this)

Needs a CUDA device for timing (``--build-only`` works anywhere nvcc is). The
target follows the device: compute capability 9.x -> gpu-hopper (sm_90a),
otherwise gpu-ampere (sm_80). fp16 is our ``--quantize fp16`` (matmul/conv
operands fp16, fp32 accumulation) against ``torch.autocast(float16)`` for
eager and torch.compile. Untuned builds use dlight's default GPU schedules;
pass ``--tuning-db`` for a MetaSchedule database tuned on this GPU (with
``--compare-untuned`` each variant is also built and timed without it, so
tuned and untuned rows come from one run). Each
precision is built twice, with and without CUDA-graph capture (the target's
``cuda_graph`` switch, on by default), to show what the graph is worth.
All builds run first, in parallel processes (``--jobs``): a lent GPU is held
by the minute, and the builds need its host's cores, not the GPU.

PyTorch baselines need a CUDA build of torch; with a CPU-only torch they are
reported as skipped (the lent GPU machines have no network to install one).
Every number comes from this one process: medians over ``--repeat`` runs after
``--warmup``, device-synchronised. Results are appended to
benchmarks/results/gpu.md with the command line and the device name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.md"
ZOO_NAMES = {"bert": "bert", "resnet50": "resnet50"}
DEFAULT_SIZE = {"bert": "large", "resnet50": "base"}


def model_size(option: str | None, name: str) -> str:
    """The zoo size of ``name`` from ``--size``: one size for all, or ``model=size`` pairs (others default)."""
    if not option:
        return DEFAULT_SIZE[name]
    if "=" not in option:
        return option
    pairs = dict(part.split("=", 1) for part in option.split(",") if part.strip())
    unknown = set(pairs) - set(ZOO_NAMES)
    if unknown:
        raise SystemExit(f"bench_gpu: --size names unknown model(s) {sorted(unknown)} (known: {sorted(ZOO_NAMES)})")
    return pairs.get(name, DEFAULT_SIZE[name])


def device_target() -> tuple[str, str]:
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        return "gpu-hopper", "no CUDA device"
    major = int(str(device.compute_version).split(".")[0])
    return ("gpu-hopper" if major == 9 else "gpu-ampere"), f"{device.device_name} (sm {device.compute_version})"


def time_ms(fn, sync, repeat: int, warmup: int, pool: str = "gpu") -> dict:
    """median / min / p90 ms of ``fn(); sync()`` through measure.harness (one candidate per process: not interleaved)."""
    from tvm_autoglm.measure import harness

    def run():
        fn()
        sync()

    return harness.time_alone(harness.function_candidate("gpu", run, pool=pool), repeat=repeat, warmup=warmup).summary()


def _target_file(target: str, cuda_graph: bool, workdir: Path) -> str:
    from tvm_autoglm.targets import targets_dir

    data = json.loads((targets_dir() / f"{target}.json").read_text())
    data["cuda_graph"] = cuda_graph
    path = workdir / f"{target}-graph-{int(cuda_graph)}.json"
    path.write_text(json.dumps(data))
    return str(path)


def build_ours(onnx_path, target, shapes, precision, tuning_db, workdir: Path, cuda_graph: bool = True,
               reuse: bool = False) -> tuple[Path, float, int]:
    import tvm_autoglm
    from tvm_autoglm.gpu import embedded_cuda_modules

    tuned = "-tuned" if tuning_db else ""
    out = workdir / f"{Path(onnx_path).stem}-{target}-{precision}-graph{int(cuda_graph)}{tuned}.so"
    if reuse and out.is_file() and out.with_suffix(".applied").is_file():
        print(f"  reusing {out.name} (built earlier in this session)", flush=True)
        return out, 0.0, int(out.with_suffix(".applied").read_text())
    start = time.perf_counter()
    model = tvm_autoglm.compile(
        onnx_path,
        target=_target_file(target, cuda_graph, workdir),
        input_shapes=shapes,
        tuning_db=tuning_db,
        quantize="none" if precision == "fp32" else precision,
    )
    out = model.export(out)
    seconds = time.perf_counter() - start
    arches = sorted({i.arch for m in embedded_cuda_modules(out) for i in m["images"] if i.kind == "sass"})
    applied = int(model.manifest.get("tuning", {}).get("records_applied", 0) or 0)
    print(f"  built {out.name} in {seconds:.1f} s; SASS for {', '.join(arches)}; {applied} tuning record(s) applied", flush=True)
    out.with_suffix(".applied").write_text(str(applied))  # written last: marks a finished build for --reuse-builds
    return out, seconds, applied


def _build_job(job: dict) -> tuple[str, float, int]:
    """One build in a worker process (spawned: TVM's state is not fork-safe)."""
    path, seconds, applied = build_ours(job["onnx"], job["target"], job["shapes"], job["precision"], job["tuning_db"],
                                        Path(job["workdir"]), job["cuda_graph"], job.get("reuse", False))
    return str(path), seconds, applied


def _export_job(job: dict) -> str:
    from tvm_autoglm import zoo

    return str(zoo.cached(job["zoo"], job["size"], job["seq"], job["batch"]))


def run_parallel(fn, jobs: list[dict], workers: int) -> list:
    """``fn`` over ``jobs`` in ``workers`` spawned processes (in order); inline when workers <= 1."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))


def engine_name(cuda_graph: bool, tuning_db) -> str:
    """The row label of one of our builds: tuned (a --tuning-db applied) and CUDA-graph variants."""
    return "tvm_autoglm" + (" tuned" if tuning_db else "") + ("" if cuda_graph else " (no cuda graph)")


def run_ours(path: Path, inputs: dict, repeat: int, warmup: int) -> tuple[dict, dict]:
    import tvm_autoglm

    print(f"    [{path.name}] loading", flush=True)
    model = tvm_autoglm.load(path)
    print(f"    [{path.name}] first run", flush=True)
    outputs = model.run(inputs)
    session = model._session
    arrays = session._to_device([inputs[s["name"]] for s in session.input_specs])
    fn = session.vm["main"]
    print(f"    [{path.name}] timing", flush=True)
    return time_ms(lambda: fn(*arrays), session.device.sync, repeat, warmup), outputs


def run_ours_isolated(path: Path, inputs: dict, repeat: int, warmup: int, timeout: float = 300) -> tuple[dict | None, dict, str | None]:
    """``run_ours`` in a child process: one build that crashes the process costs its own row only."""
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-run-"))
    np.savez(work / "inputs.npz", **inputs)
    command = [sys.executable, "-X", "faulthandler", __file__, "--time-one", str(path), "--inputs", str(work / "inputs.npz"),
               "--repeat", str(repeat), "--warmup", str(warmup), "--result", str(work / "result")]
    try:
        proc = subprocess.run(command, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, {}, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        return None, {}, f"exit code {proc.returncode}" + (" (segmentation fault)" if proc.returncode == -11 else "")
    stats = json.loads((work / "result.json").read_text())
    with np.load(work / "result.npz") as data:
        outputs = {k: data[k] for k in data.files}
    return stats, outputs, None


def _time_one(args) -> int:
    with np.load(args.inputs) as data:
        inputs = {k: data[k] for k in data.files}
    stats, outputs = run_ours(Path(args.time_one), inputs, args.repeat, args.warmup)
    np.savez(args.result + ".npz", **outputs)
    Path(args.result + ".json").write_text(json.dumps(stats))
    return 0


def torch_baselines(name, size, seq, batch, inputs, precisions, repeat, warmup, with_compile=True) -> tuple[dict, dict]:
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
    variants = [("eager", module)] + ([("torch.compile", torch.compile(module))] if with_compile else [])
    for variant, fn in variants:
        for precision in precisions:
            ctx = (lambda: torch.autocast("cuda", dtype=torch.float16)) if precision == "fp16" else torch.no_grad

            def call(fn=fn, ctx=ctx):
                with torch.no_grad(), ctx():
                    return fn(*args)

            try:
                results[(variant, precision)] = time_ms(call, torch.cuda.synchronize, repeat, warmup)
            except Exception as err:  # torch.compile may not work on a given image; eager still counts
                print(f"  {variant} {precision} failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
                continue
            if variant == "eager" and precision == "fp32":
                # The accuracy reference in true fp32: cuDNN convolutions default to TF32 on Ampere and
                # later (timings keep torch's defaults, which is what a user of torch gets).
                tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
                try:
                    out = call(module)
                finally:
                    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
                out = out if isinstance(out, (tuple, list)) else (out,)
                reference = {k: v.float().cpu().numpy() for k, v in zip(zoo.MODELS[ZOO_NAMES[name]].outputs, out)}
    return results, reference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,resnet50", help="comma list of bert, resnet50")
    parser.add_argument("--size", default=None,
                        help="zoo size for every model, or per model as bert=tiny,resnet50=base (default: large for bert, base for resnet50)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--cuda-graph", default="on,off", help="build variants: on, off or on,off (default both)")
    parser.add_argument("--target", default=None, help="default: from the device (gpu-hopper for sm_9x, else gpu-ampere)")
    parser.add_argument("--tuning-db", default=None)
    parser.add_argument("--compare-untuned", action="store_true",
                        help="with --tuning-db: also build and time each variant without it (tuned vs untuned, same run)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1, help="parallel build processes")
    parser.add_argument("--workdir", default=None, help="folder for the built .so files (default: a new temporary one)")
    parser.add_argument("--reuse-builds", action="store_true",
                        help="take a .so already in --workdir instead of building it again (same session, same sources)")
    parser.add_argument("--no-torch-compile", action="store_true", help="time PyTorch eager only")
    parser.add_argument("--build-only", action="store_true", help="compile and check the .so; no timing (no GPU needed)")
    parser.add_argument("--json-out", default=None, help="also write the report here (rewritten after each model)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/gpu.md")
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)  # child mode of run_ours_isolated
    parser.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_one:
        return _time_one(args)

    from tvm_autoglm import zoo

    target, device = device_target()
    target = args.target or target
    if not args.build_only and device == "no CUDA device":
        print("bench_gpu: no CUDA device on this machine; use --build-only to just build", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    graphs = [{"on": True, "off": False}[g.strip()] for g in args.cuda_graph.split(",") if g.strip()]
    rows, report = [], {"device": device, "target": target, "command": " ".join(sys.argv), "models": {}}
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    models = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        size = model_size(args.size, name)
        zname = ZOO_NAMES[name]
        label = f"{name}-{size}" + (f" s{args.seq}" if zoo.MODELS[zname].uses_seq else "") + f" b{args.batch}"
        models.append({"name": name, "zoo": zname, "size": size, "label": label, "seq": args.seq, "batch": args.batch})

    start = time.perf_counter()
    onnx_paths = run_parallel(_export_job, models, args.jobs)
    print(f"ONNX models ready in {time.perf_counter() - start:.0f} s", flush=True)
    jobs = []
    for model, onnx_path in zip(models, onnx_paths):
        model["onnx"] = onnx_path
        shapes = zoo.input_shapes(model["zoo"], model["size"], args.seq, args.batch)
        databases = [args.tuning_db] + ([None] if args.compare_untuned and args.tuning_db else [])
        for precision in precisions:
            for graph in graphs:
                for db in databases:
                    jobs.append({"label": model["label"], "onnx": onnx_path, "target": target, "shapes": shapes, "precision": precision,
                                 "tuning_db": db, "workdir": str(workdir), "cuda_graph": graph, "reuse": args.reuse_builds})
    start = time.perf_counter()
    built = run_parallel(_build_job, jobs, args.jobs)
    print(f"{len(jobs)} builds in {time.perf_counter() - start:.0f} s ({args.jobs} at a time)", flush=True)
    report["build_only"] = report["dry"] = args.build_only  # "dry": nothing was timed (the dry session says so in every JSON)
    for job, (path, seconds, applied) in zip(jobs, built):
        job["path"], job["build_s"] = Path(path), seconds
        tuned = "_tuned" if job["tuning_db"] else ""
        entry = report["models"].setdefault(job["label"], {})
        entry[f"build_s_{job['precision']}_graph{int(job['cuda_graph'])}{tuned}"] = round(seconds, 1)
        if job["tuning_db"]:
            entry[f"records_applied_{job['precision']}_graph{int(job['cuda_graph'])}"] = applied
    if args.json_out:  # the builds alone are a result: a call cut short during timing still returns them
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    if args.build_only:
        print(json.dumps(report, indent=2))
        return 0

    for model in models:
        label = model["label"]
        entry = report["models"][label]
        inputs = zoo.example_inputs(model["zoo"], model["size"], args.seq, args.batch)
        print(f"{label}: target {target}, device {device}", flush=True)
        ours = {}
        for job in (j for j in jobs if j["label"] == label):
            engine = engine_name(job["cuda_graph"], job["tuning_db"])
            stats, outputs, failure = run_ours_isolated(job["path"], inputs, args.repeat, args.warmup)
            if failure:
                entry[f"{engine}_{job['precision']}"] = {"failed": failure}
                print(f"  {engine} {job['precision']}: FAILED, {failure}", flush=True)
                continue
            ours[(engine, job["precision"])] = stats, outputs
            print(f"  {engine} {job['precision']}: {stats['median_ms']:.3f} ms", flush=True)
        torch_stats, reference = torch_baselines(model["name"], model["size"], args.seq, args.batch, inputs, precisions,
                                                 args.repeat, args.warmup, with_compile=not args.no_torch_compile)
        if "skipped" in reference:
            entry["torch"] = reference["skipped"]
        for (engine, precision), (stats, outputs) in ours.items():
            err = None
            if reference and "skipped" not in reference:
                err = max(float(np.max(np.abs(outputs[k] - reference[k]))) for k in reference if k in outputs)
            rows.append((label, engine, precision, stats["median_ms"], stats["p90_ms"], err))
            entry[f"{engine}_{precision}"] = {**stats, "max_abs_err_vs_torch_fp32": err}
        for (variant, precision), stats in torch_stats.items():
            rows.append((label, variant, precision, stats["median_ms"], stats["p90_ms"], None))
            entry[f"{variant}_{precision}"] = stats
            print(f"  {variant} {precision}: {stats['median_ms']:.3f} ms", flush=True)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if rows and not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"\n## {time.strftime('%Y-%m-%d')} {device}, target {target}\n", f"`{report['command']}`\n", ""]
        lines += ["| model | engine | precision | median ms | p90 ms | max abs err vs torch fp32 |", "|---|---|---|---|---|---|"]
        for label, engine, precision, median, p90, err in rows:
            lines.append(f"| {label} | {engine} | {precision} | {median:.3f} | {p90:.3f} | {'' if err is None else f'{err:.2e}'} |")
        for label, entry in report["models"].items():
            for key, value in entry.items():
                if isinstance(value, dict) and "failed" in value:
                    lines.append(f"\n{label} {key}: failed ({value['failed']})")
        if any(isinstance(v.get("torch"), str) for v in report["models"].values()):
            lines.append("\nPyTorch baselines skipped: " + "; ".join({v['torch'] for v in report['models'].values() if 'torch' in v}))
        with RESULTS.open("a") as handle:
            handle.write("\n".join(lines) + "\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
