"""MetaSchedule tuning on a lent GPU: the costliest kernels of a model, dlight's schedule as the baseline.

    python3 benchmarks/gpu_tune.py --out $OUT/tune                     # on the GPU machine (gpu_session.sh "tune")
    .venv/bin/python benchmarks/gpu_tune.py --dry-run --size tiny --out /tmp/tune-dry   # here, no GPU

A lent GPU is held for minutes, so the search goes only where it can pay: the
``--top`` kernels with the largest estimated share (calls x FLOPs) of the model at
``--quantize`` precision (default bert-large s128 fp16, what ``compile --quantize
fp16`` runs). Before the search each kernel's dlight schedule is measured and
committed as a record (``tuning.baseline``), so the database's best never loses to
the untuned build in the per-kernel timing. The machine's cores build the
candidates (LocalBuilder, one worker per core), its GPU measures them
(LocalRunner on cuda). Everything lands in ``--out`` as it goes: the database
(``db/``, one JSON line per record, the baselines first), ``curve.json`` after
every measured batch, ``tune.json`` and ``tasks.json`` at the end; a call cut
short still returns the records measured so far. The end-to-end check (tuned vs untuned build, each timed
in its own process) is ``bench_gpu.py --tuning-db DIR --compare-untuned``.

``--dry-run`` needs no GPU: it extracts and ranks the tasks, builds dlight's
schedule and a few random draws of MetaSchedule's design spaces (post-processed
like the search's) of each chosen kernel with the same builder, measures
nothing, and writes the same files with ``"dry": true``, with how many draws
built. It proves the plumbing, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _write(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def task_rows(tasks) -> list[dict]:
    return [{"name": t.name, "calls": t.weight, "flops": t.flops, "share": round(t.share, 4)} for t in tasks]


def dry_run(args, onnx_path, shapes, out: Path) -> int:
    """Everything but the measurements: extraction, ranking, baseline and candidate builds."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_autoglm.gpu import default_gpu_schedule, install_compile_callback
    from tvm_autoglm.targets import load_target
    from tvm_autoglm.tuning import tasks as taskmod
    from tvm_autoglm.tuning.driver import _build_for_tuning
    from tvm_autoglm.tuning.fastimport import preload_tensor_intrin

    from tvm_autoglm.tuning import database as dbmod

    install_compile_callback()
    dbmod.open_db(out / "db")  # the (empty) database files, so the rebuild phase's --tuning-db opens
    spec = load_target(args.target)
    tvm_target = spec.tvm_target()
    report = {"dry": True, "target": spec.name, "model": args.label, "quantize": args.quantize, "phases": {}}
    start = time.perf_counter()
    build = _build_for_tuning(onnx_path, spec, 3, shapes, args.quantize)
    every, _ = taskmod.extract(build.mod, tvm_target, min_share=0.0)
    chosen, rest = taskmod.top_tasks(every, args.top, min_share=args.min_share)
    _write(out / "tasks.json", {"dry": True, "chosen": task_rows(chosen), "rest": task_rows(rest)})
    report["phases"]["extract_s"] = round(time.perf_counter() - start, 1)
    print(f"{len(every)} tasks; tuning the top {len(chosen)}: " + ", ".join(f"{t.name} ({t.share:.0%})" for t in chosen), flush=True)

    preload_tensor_intrin()
    builder = ms.builder.LocalBuilder(max_workers=args.builder_workers, timeout_sec=args.builder_timeout, initializer=preload_tensor_intrin)
    inputs, labels = [], []
    for t in chosen:
        sch, rule = default_gpu_schedule(t.mod["main"], tvm_target)
        if sch is not None:
            inputs.append(ms.builder.BuilderInput(sch.mod, tvm_target))
            labels.append({"task": t.name, "kind": "baseline", "rule": rule})
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    # A design space is one random draw of its decisions; the search draws many and the
    # postprocessors and the builder reject some. Drawing --dry-candidates seeds per kernel
    # shows how many of the search's candidates would build (MetaSchedule's CUDA fp16 spaces
    # in TVM 0.27: about 1 in 6 here, the rest fail lowering with a tvm_access_ptr dtype check).
    for seed in range(args.dry_candidates):
        contexts, _ = extracted_tasks_to_tune_contexts([t.extracted for t in chosen], work_dir=str(out / "db"), seed=seed,
                                                       num_threads=1)
        for t, ctx in zip(chosen, contexts):
            try:
                spaces = ctx.generate_design_space()
            except Exception as err:  # noqa: BLE001 - reported, the search would skip this kernel too
                labels.append({"task": t.name, "kind": "candidate", "seed": seed, "error": f"space: {type(err).__name__}: {str(err)[:200]}"})
                continue
            for index, sch in enumerate(spaces):
                row = {"task": t.name, "kind": "candidate", "seed": seed, "space": index}
                if all(post.apply(sch) for post in ctx.space_generator.postprocs):
                    inputs.append(ms.builder.BuilderInput(sch.mod, tvm_target))
                else:
                    row["error"] = "a postprocessor rejected this draw"
                labels.append(row)
    start = time.perf_counter()
    results = builder.build(inputs) if inputs else []
    report["phases"]["build_s"] = round(time.perf_counter() - start, 1)
    built = iter(results)
    for row in labels:
        if "error" in row:
            continue
        result = next(built)
        row["built"] = result.error_msg is None
        if result.error_msg is not None:
            row["error"] = result.error_msg[-300:]
        elif result.artifact_path:
            row["artifact_bytes"] = Path(result.artifact_path).stat().st_size
    report["builds"] = labels
    report["summary"] = summarize(labels)
    report["measured"] = "skipped (dry run)"
    _write(out / "tune.json", report)
    for name, row in report["summary"].items():
        print(f"  {name[:50]}: baseline ({row['rule']}) {'built' if row['baseline_built'] else 'NOT built'}; "
              f"candidates: {row['candidates_built']}/{row['candidates']} built, {row['rejected_by_postproc']} rejected by postprocessors",
              flush=True)
    print(f"dry run: builds in {report['phases']['build_s']} s; nothing measured; {out / 'tune.json'}", flush=True)
    # The plumbing works when every baseline builds; the candidates' build rate is a finding, not a failure.
    return 0 if all(row["baseline_built"] for row in report["summary"].values()) else 1


def summarize(labels: list[dict]) -> dict:
    """Per task: the baseline's rule and build, and how many candidate draws built / were rejected."""
    summary: dict[str, dict] = {}
    for row in labels:
        entry = summary.setdefault(row["task"], {"rule": None, "baseline_built": False, "candidates": 0,
                                                 "candidates_built": 0, "rejected_by_postproc": 0})
        if row["kind"] == "baseline":
            entry["rule"], entry["baseline_built"] = row.get("rule"), bool(row.get("built"))
            continue
        entry["candidates"] += 1
        entry["candidates_built"] += int(bool(row.get("built")))
        entry["rejected_by_postproc"] += int("postprocessor" in row.get("error", ""))
    return summary


def real_run(args, onnx_path, shapes, out: Path) -> int:
    from tvm_autoglm.gpu import install_compile_callback
    from tvm_autoglm.tuning import tune

    install_compile_callback()
    curve: list[dict] = []

    def on_batch(point):
        curve.append(point)
        _write(out / "curve.json", {"dry": False, "curve": curve})

    result = tune(onnx_path, target=args.target, input_shapes=shapes, time_budget=args.budget, tuning_db=str(out / "db"),
                  quantize=args.quantize, max_tasks=args.top, min_share=args.min_share, use_shipped_schedules=False,
                  remeasure_top=1, check_in_model=False, builder_timeout_s=args.builder_timeout, on_batch=on_batch,
                  label="gpu-tune")
    report = {"dry": False, "model": args.label, "quantize": args.quantize, **result.to_json()}
    _write(out / "tune.json", report)
    _write(out / "tasks.json", {"dry": False, "chosen": result.tasks, "rest": result.skipped_tasks})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert", help="zoo model (default bert)")
    parser.add_argument("--size", default="large")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quantize", default="fp16")
    parser.add_argument("--target", default="gpu-hopper")
    parser.add_argument("--top", type=int, default=4, help="tune this many of the costliest kernels")
    parser.add_argument("--min-share", type=float, default=0.02, help="and only kernels with at least this share")
    parser.add_argument("--budget", default="150s", help="wall time of the search (includes the baselines)")
    parser.add_argument("--builder-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--builder-timeout", type=float, default=180.0, help="seconds per candidate build (nvcc inside)")
    parser.add_argument("--out", required=True, help="folder for tasks.json, db/, curve.json, tune.json")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: build baselines and a few candidates, measure nothing")
    parser.add_argument("--dry-candidates", type=int, default=3, help="random draws of each design space built in a dry run")
    args = parser.parse_args(argv)

    from tvm_autoglm import zoo

    out = Path(args.out)
    (out / "db").mkdir(parents=True, exist_ok=True)
    args.label = f"{args.model}-{args.size} s{args.seq} b{args.batch} {args.quantize}"
    onnx_path = str(zoo.cached(args.model, args.size, args.seq, args.batch))
    shapes = zoo.input_shapes(args.model, args.size, args.seq, args.batch)
    if not args.dry_run:
        import tvm

        if not tvm.cuda(0).exist:
            print("gpu_tune: no CUDA device here; --dry-run builds without measuring", file=sys.stderr)
            return 2
    return (dry_run if args.dry_run else real_run)(args, onnx_path, shapes, out)


if __name__ == "__main__":
    sys.exit(main())
