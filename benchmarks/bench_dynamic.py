"""Dynamic vs static builds of one model, and onnxruntime, across sequence lengths.

    .venv/bin/python benchmarks/bench_dynamic.py                       # bert-base, seq 1..512, specialised 128
    .venv/bin/python benchmarks/bench_dynamic.py --size tiny --seqs 16,48 --specialize 16 --static 16

One dynamic build (``seq`` = 1..max, ``--specialize`` sizes as static variants) is timed at each
length in ``--seqs``; a static build at each ``--static`` length; onnxruntime (its own thread pool,
same thread count) at each length. All candidates of one length are timed interleaved in one
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
    start = time.perf_counter()
    dynamic = tvm_autoglm.compile(path, "cpu", 3, input_shapes={"input_ids": [1, rng], "attention_mask": [1, rng]},
                                  specialize={"seq": special} if special else None)
    dyn_s = time.perf_counter() - start
    print(f"compile dynamic (seq 1..{args.max_seq}, specialised {special or 'none'}): {dyn_s:.1f} s", flush=True)
    static_models, static_s = {}, {}
    for seq in statics:
        start = time.perf_counter()
        static_models[seq] = tvm_autoglm.compile(path, "cpu", 3, input_shapes={"input_ids": [1, seq], "attention_mask": [1, seq]})
        static_s[seq] = time.perf_counter() - start
        print(f"compile static seq {seq}: {static_s[seq]:.1f} s", flush=True)

    print("| seq | dynamic ms | kernel | static ms | dyn/static | onnxruntime ms | dyn/ort | max abs diff vs ort |")
    print("|---|---|---|---|---|---|---|---|")
    for seq in seqs:
        inputs = _inputs(seq)
        kernel = dynamic._session.function_for(dynamic._session._checked(inputs))
        cands = [_tvm_candidate("dynamic", dynamic._session, inputs)]
        ort_cand, ort_session = _ort_candidate("ort", path, inputs, threads)
        cands.append(ort_cand)
        if seq in static_models:
            cands.append(_tvm_candidate("static", static_models[seq]._session, inputs))
        ref = ort_session.run(None, inputs)
        got = list(dynamic.run(inputs).values())
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
        results = measure_interleaved(cands, repeat=args.repeat, warmup=2)
        med = {c.name: r.summary()["median_ms"] for c, r in zip(cands, results)}
        static = f"{med['static']:.2f}" if "static" in med else "-"
        ratio = f"{med['dynamic'] / med['static']:.2f}" if "static" in med else "-"
        print(f"| {seq} | {med['dynamic']:.2f} | {kernel} | {static} | {ratio} | {med['ort']:.2f} | {med['dynamic'] / med['ort']:.2f} | {diff:.1e} |  <!-- {drop_note(results)} -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
