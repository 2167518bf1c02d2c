"""`make bench`: our builds vs onnxruntime, OpenVINO and PyTorch on the zoo's base models.

    .venv/bin/python benchmarks/run_benchmarks.py                          # bert-base s128, gpt-neox base s128, resnet50 base
    .venv/bin/python benchmarks/run_benchmarks.py --size tiny --seq 16     # a quick smoke run

For each model: build the ONNX file (zoo, cached), compile it (O3, shipped
schedules, optional --tuning-db), then `auto-glm bench`'s measurement: the
artifact, onnxruntime (fastest optimisation level) and PyTorch eager,
interleaved in one time window with the same thread count, on the zoo's
example inputs, dropping rounds disturbed by other processes.

Writes benchmarks/results/bench.md and bench.json, and copies the markdown
into benchmarks/RESULTS.md between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` (appending the section if the markers are absent), so
other benchmark scripts can own their own sections of the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Peers every zoo model races against: onnxruntime (fastest level), OpenVINO (f32 and its default
#: precision; skipped with a note where it is not installed), PyTorch eager.
PEERS = ["ort", "openvino", "torch"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bert,gpt-neox,resnet50", help="comma-separated zoo names")
    ap.add_argument("--size", default="base", help="zoo size (default base)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length for the language models (default 128)")
    ap.add_argument("--exporter", default="dynamo", help="zoo exporter (default dynamo)")
    ap.add_argument("--opt", type=int, default=3, help="opt level (default 3)")
    ap.add_argument("--tuning-db", default=None, help="MetaSchedule database folder to apply")
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: physical cores)")
    ap.add_argument("--repeat", type=int, default=20, help="clean rounds per model (default 20)")
    ap.add_argument("--idle-wait", type=float, default=60.0, help="seconds to wait for an idle machine per model (default 60)")
    ap.add_argument("--build-dir", default=str(ROOT / "out" / "bench"), help="where the compiled artifacts go")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench.md"), help="markdown report (JSON beside it)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="file whose bench section is replaced ('' to skip)")
    return ap.parse_args(argv)


def bench_model(name: str, args, threads: int, log) -> dict:
    import tvm_autoglm
    from tvm_autoglm import zoo
    from tvm_autoglm.cli.cmd_bench import bench

    seq = args.seq if zoo.MODELS[name].uses_seq else 0
    label = f"{name}-{args.size}" + (f" s{seq}" if seq else "")
    log(f"[bench] {label}: building the ONNX model (zoo, cached)")
    onnx_path = zoo.cached(name, args.size, args.seq, 1, args.exporter)
    shapes = zoo.input_shapes(name, args.size, args.seq, 1)
    inputs = zoo.example_inputs(name, args.size, args.seq, 1)
    log(f"[bench] {label}: compiling O{args.opt}")
    start = time.perf_counter()
    model = tvm_autoglm.compile(onnx_path, opt_level=args.opt, input_shapes=shapes, tuning_db=args.tuning_db)
    compile_s = time.perf_counter() - start
    so = Path(args.build_dir) / f"{name}-{args.size}{'-s' + str(seq) if seq else ''}-O{args.opt}.so"
    model.export(so)
    log(f"[bench] {label}: measuring vs {', '.join(PEERS)}")
    result = bench(str(so), PEERS, model=str(onnx_path), inputs=inputs, threads=threads, repeat=args.repeat, idle_wait=args.idle_wait, log=log)
    result.update(label=label, onnx=str(onnx_path), artifact=str(so), compile_s=compile_s, tuning=model.manifest.get("tuning"))
    return result


def to_markdown(results: list[dict], peak: dict | None, args, argv: list[str], machine: dict) -> str:
    from tvm_autoglm.measure.machine import machine_line

    lines = [START, "## Latency vs onnxruntime, OpenVINO and PyTorch (`make bench`)", ""]
    lines.append(f"{machine_line(machine)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
    if peak:
        lines.append(f"Measured fp32 peak: {peak['gflops']:.1f} GFLOP/s with {peak['threads']} threads ({peak['method']}).")
    peer_names = []
    for r in results:
        for c in r.get("candidates", [])[1:]:
            if c["name"] not in peer_names:
                peer_names.append(c["name"])
    header = "| model | ours (ms) | p90 | " + " | ".join(f"{p} (ms) | ours vs {p}" for p in peer_names) + " | kernels tuned / default / plain | rounds dropped |"
    lines += [
        "",
        "Median latency of clean interleaved rounds, batch 1. `ours vs X` = X's median / our median (> 1: we are faster).",
        "OpenVINO's default precision is its own accuracy class (bf16 on CPUs with AVX512-BF16): compare fp32 builds with `openvino-f32`.",
        "",
        header,
        "|" + "---|" * (3 + 2 * len(peer_names)) + "---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} |" + " |" * (2 + 2 * len(peer_names)) + " |")
            continue
        by = {c["name"]: c for c in r["candidates"]}
        ours = r["candidates"][0]
        t = r.get("tuning") or {}
        cells = []
        for name in peer_names:
            row = by.get(name)
            cells += [f"{row['median_ms']:.2f}", f"{row['median_ms'] / ours['median_ms']:.2f}x"] if row else ["n/a", "n/a"]
        dropped = f"{ours.get('dropped', 0)} of {ours.get('attempts', 0)}"
        if ours.get("topped_up"):
            dropped += f" ({ours['topped_up']} least-disturbed kept: machine saturated)"
        lines.append(f"| {r['label']} | {ours['median_ms']:.2f} | {ours['p90_ms']:.2f} | " + " | ".join(cells)
                     + f" | {t.get('tuned_kernels', '?')} / {t.get('default_scheduled_kernels', '?')} / {t.get('plain_kernels', '?')} | {dropped} |")
    lines += ["", "Baselines:"]
    for r in results:
        for c in r.get("candidates", [])[1:]:
            lines.append(f"- {r['label']} {c['name']}: {c['detail']}")
        for note in r.get("notes", []):
            lines.append(f"- {r['label']}: {note}")
        if r.get("idle") and not r["idle"].get("idle"):
            lines.append(f"- {r['label']}: machine was busy when measured (CPU {r['idle'].get('cpu_percent')}%, load {r['idle'].get('load1')}); rounds disturbed by other processes were dropped")
    lines += [
        "",
        "Commands:",
        "",
        "```",
        "make bench    # = " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/run_benchmarks.py", *argv]),
    ]
    for r in results:
        if "artifact" in r:
            lines.append(f"auto-glm bench --binary {r['artifact']} " + " ".join(f"--vs {p}" for p in PEERS) + f" --model {r['onnx']} --threads {machine['threads']} --repeat {args.repeat}")
    lines += ["```", END]
    return "\n".join(lines) + "\n"


def replace_section(path: Path, section: str) -> None:
    """Swap the text between our markers (or append the section) atomically."""
    from tvm_autoglm.runtime.manifest import write_bytes_atomic

    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_bytes_atomic(path, text.encode())


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from tvm_autoglm.measure.machine import machine_info, peak_gflops, use_threads
    from tvm_autoglm.runtime.manifest import write_bytes_atomic, write_json_atomic

    threads = use_threads(args.threads)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    peak = peak_gflops(threads)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            results.append(bench_model(name, args, threads, log))
        except Exception as err:  # one model failing must not lose the others' numbers
            log(f"[bench] {name}: failed: {type(err).__name__}: {err}")
            results.append({"label": f"{name}-{args.size}", "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"})
    machine = machine_info(threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), {"results": results, "peak": peak, "machine": machine, "argv": argv})  # numbers first
    markdown = to_markdown(results, peak, args, argv, machine)
    write_bytes_atomic(out, markdown.encode())
    if args.results:
        replace_section(Path(args.results), markdown)
    print(markdown)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    os.environ.setdefault("TVM_LOG_DEBUG", "0")
    sys.exit(main())
