"""Dynamic vs static builds of one model, and onnxruntime, across sequence lengths.

    .venv/bin/python benchmarks/bench_dynamic.py                       # bert-base, seq 1..512, specialised 128
    .venv/bin/python benchmarks/bench_dynamic.py --size tiny --seqs 16,48 --specialize 16 --static 16
    .venv/bin/python benchmarks/bench_dynamic.py --max-batch 8 --batches 4,8 --static-batches 4,8 --vs-openvino

One dynamic build (``seq`` = 1..max, ``--specialize`` sizes as static variants) is timed at each
length in ``--seqs``; a static build at each ``--static`` length; onnxruntime (its own thread pool,
same thread count) at each length, and with ``--vs-openvino`` OpenVINO (the dynamic ONNX compiled once
with its dynamic dims, latency hint, f32, same thread count). ``--max-batch`` makes the batch dim
of the dynamic build symbolic too; ``--batches`` are then measured at ``--batch-seq``. All candidates of one length are timed interleaved in one
process (``measure_interleaved``: round-robin, order rotated, rounds in which a thread waited for a
CPU dropped and counted). The ONNX file is the zoo model exported with symbolic batch/seq; the
static builds pin it (``--input-shape``), so both builds start from the same graph. Compile times
are wall-clock of ``tvm_autoglm.compile`` in this process (a shared machine inflates them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvm_autoglm import zoo  # noqa: E402
from tvm_autoglm.measure.machine import use_threads  # noqa: E402


def _inputs(seq: int, batch: int = 1) -> dict:
    rng = np.random.default_rng(seq)
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq - seq // 4 :] = 0 if seq >= 4 else 1
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}


def _tvm_candidate(name, session, inputs):
    from tvm_autoglm.measure.timing import Candidate

    checked = session._checked(inputs)
    arrays = session._to_device(checked)
    fn = session.vm[session.function_for(checked)]

    def run():
        fn(*arrays)
        session.device.sync()

    return Candidate(name, run)


def _ort_candidate(name, path, inputs, threads):
    from tvm_autoglm.measure.candidates import ort_session
    from tvm_autoglm.measure.timing import Candidate

    session = ort_session(Path(path), threads)  # the harness's one set-up: intra-op = ours, inter-op 1
    return Candidate(name, lambda: session.run(None, inputs), pool=f"ort-{name}"), session


def _openvino_compiled(path, threads):
    """OpenVINO's CPU plugin on the dynamic ONNX as it is (no reshape): one compile serves every shape, as ours does."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def _openvino_candidate(name, compiled, inputs):
    from tvm_autoglm.measure.timing import Candidate

    request = compiled.create_infer_request()
    feeds = {port.get_any_name(): inputs[port.get_any_name()] for port in compiled.inputs}
    request.infer(feeds)
    return Candidate(name, lambda: request.infer(feeds), pool=f"openvino-{name}"), request, feeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert")
    ap.add_argument("--size", default="base")
    ap.add_argument("--max-seq", type=int, default=512)
    ap.add_argument("--seqs", default="32,128,200,384")
    ap.add_argument("--specialize", default="128", help="comma list of specialised lengths ('' for none)")
    ap.add_argument("--static", default="128,200", help="lengths that also get a static build")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="TVM and onnxruntime threads (default: physical cores)")
    ap.add_argument("--onnx", default=None, help="a dynamic ONNX file instead of the zoo export")
    ap.add_argument("--max-batch", type=int, default=1, help="the dynamic build's batch range is 1..this (1: batch pinned)")
    ap.add_argument("--batches", default="", help="batch sizes (> 1) also measured, at --batch-seq")
    ap.add_argument("--batch-seq", type=int, default=128)
    ap.add_argument("--static-batches", default="", help="batch sizes that also get a static build at --batch-seq")
    ap.add_argument("--vs-openvino", action="store_true", help="also OpenVINO f32 on the dynamic ONNX (compiled once)")
    args = ap.parse_args(argv)
    threads = use_threads(args.threads)

    import tvm_autoglm
    from tvm_autoglm.measure.timing import drop_note, measure_interleaved

    path = Path(args.onnx) if args.onnx else zoo.cached(args.model, args.size, 128, 1, dynamic=True)
    seqs = [int(s) for s in args.seqs.split(",") if s]
    special = [int(s) for s in args.specialize.split(",") if s]
    statics = [int(s) for s in args.static.split(",") if s]
    print(f"# {args.model}-{args.size} from {path.name}; threads={threads}; load avg {os.getloadavg()[0]:.2f}", flush=True)

    rng = (1, args.max_seq)
    batch_dim = (1, args.max_batch) if args.max_batch > 1 else 1
    batches = [int(b) for b in args.batches.split(",") if b]
    if any(b > args.max_batch for b in batches):
        ap.error(f"--batches {batches} exceed --max-batch {args.max_batch}")
    start = time.perf_counter()
    dynamic = tvm_autoglm.compile(path, "cpu", 3, input_shapes={"input_ids": [batch_dim, rng], "attention_mask": [batch_dim, rng]},
                                  specialize={"seq": special} if special else None)
    dyn_s = time.perf_counter() - start
    print(f"compile dynamic (batch 1..{args.max_batch}, seq 1..{args.max_seq}, specialised {special or 'none'}): {dyn_s:.1f} s; "
          f"artifact {_artifact_mb(dynamic):.1f} MB", flush=True)
    static_models, static_s = {}, {}
    shapes = [(1, seq) for seq in seqs] + [(b, args.batch_seq) for b in batches]
    wanted = [(1, seq) for seq in statics] + [(int(b), args.batch_seq) for b in args.static_batches.split(",") if b]
    for batch, seq in wanted:
        start = time.perf_counter()
        static_models[batch, seq] = tvm_autoglm.compile(path, "cpu", 3, input_shapes={"input_ids": [batch, seq], "attention_mask": [batch, seq]})
        static_s[batch, seq] = time.perf_counter() - start
        print(f"compile static batch {batch} seq {seq}: {static_s[batch, seq]:.1f} s; artifact {_artifact_mb(static_models[batch, seq]):.1f} MB", flush=True)
    ov_model = _openvino_compiled(path, threads) if args.vs_openvino else None

    print("| batch x seq | dynamic ms | kernel | static ms | dyn/static | onnxruntime ms | dyn/ort | openvino f32 ms | dyn/ov | max abs diff vs ort |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch, seq in shapes:
        inputs = _inputs(seq, batch)
        kernel = dynamic._session.function_for(dynamic._session._checked(inputs))
        cands = [_tvm_candidate("dynamic", dynamic._session, inputs)]
        ort_cand, ort_session = _ort_candidate("ort", path, inputs, threads)
        cands.append(ort_cand)
        if (batch, seq) in static_models:
            cands.append(_tvm_candidate("static", static_models[batch, seq]._session, inputs))
        ref = ort_session.run(None, inputs)
        got = list(dynamic.run(inputs).values())
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
        if ov_model is not None:
            ov_cand, request, feeds = _openvino_candidate("openvino", ov_model, inputs)
            cands.append(ov_cand)
            result = request.infer(feeds)
            diff_ov = max(float(np.abs(np.asarray(result[i]) - r).max()) for i, r in enumerate(ref))
            if diff_ov > 1e-3:
                print(f"<!-- openvino differs from onnxruntime by {diff_ov:.1e} at {batch}x{seq} -->")
        results = measure_interleaved(cands, repeat=args.repeat, warmup=2)
        med = {c.name: r.summary()["median_ms"] for c, r in zip(cands, results)}
        static = f"{med['static']:.2f}" if "static" in med else "-"
        ratio = f"{med['dynamic'] / med['static']:.2f}" if "static" in med else "-"
        ov = f"{med['openvino']:.2f} | {med['dynamic'] / med['openvino']:.2f}" if "openvino" in med else "- | -"
        print(f"| {batch} x {seq} | {med['dynamic']:.2f} | {kernel} | {static} | {ratio} | {med['ort']:.2f} | "
              f"{med['dynamic'] / med['ort']:.2f} | {ov} | {diff:.1e} |  <!-- {drop_note(results)} -->", flush=True)
    return 0


def _artifact_mb(model) -> float:
    """Size of the exported library (the artifact a user ships), in MB."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.so"
        model.export(str(out))
        return out.stat().st_size / 1e6


if __name__ == "__main__":
    raise SystemExit(main())
