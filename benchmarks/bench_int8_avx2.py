"""int8 on AVX2 (no VNNI): the vpmaddwd kernel vs our fp32 build, interleaved in one process.

    nice -n 19 .venv/bin/python benchmarks/bench_int8_avx2.py matmul
    nice -n 19 .venv/bin/python benchmarks/bench_int8_avx2.py minilm --seq 128

Builds, in one process: fp32; the previous int8 path (int8 x int8 -> int32
``R.matmul``, scheduled by the generic Matmul rule: vpmulld); and the packed
int16 path (``quantize/pack.py``) tensorized by ``schedule_rules/int8_matmul.py``
(vpmaddwd). ``minilm`` adds onnxruntime fp32 and ``quantize_dynamic``. Timings
are round-robin (order rotated each round) so load drifts hit every build alike;
the load average is recorded with the table. Until the rule is in
``DEFAULT_RULES`` this script puts it first for its own process only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results" / "quantize.md"


def interleaved_ms(fns: dict, rounds: int, number: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per call of each fn, measured round-robin with the order rotated every round."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(number):
                fns[name]()
            times[name].append((time.perf_counter() - start) / number * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def with_int8_rule():
    """(rule tuple, restore fn): the vpmaddwd rule ahead of DEFAULT_RULES in apply_default_schedules, this process only."""
    import tvm_autoglm.schedule_rules as rules
    from tvm_autoglm.schedule_rules.int8_matmul import Int8MatmulAVX2

    full = (Int8MatmulAVX2(),) + rules.DEFAULT_RULES
    saved = rules.apply_default_schedules.__defaults__
    rules.apply_default_schedules.__defaults__ = (full,)
    return full, lambda: setattr(rules.apply_default_schedules, "__defaults__", saved)


def _vm(mod, rules_tuple=None):
    import tvm
    from tvm import relax

    from tvm_autoglm.schedule_rules import DEFAULT_RULES, apply_default_schedules
    from tvm_autoglm.targets import load_target

    spec = load_target("cpu")
    with spec.tvm_target():
        mod = relax.get_pipeline("zero")(mod)
    mod = apply_default_schedules(mod, spec.tvm_target(), rules_tuple or DEFAULT_RULES)
    return relax.VirtualMachine(tvm.compile(mod, spec.tvm_target()), tvm.cpu())


def bench_matmul(args) -> list[str]:
    import tvm
    from tvm import relax

    from tvm_autoglm.quantize import int8
    from tvm_autoglm.schedule_rules import DEFAULT_RULES
    from tvm_autoglm.schedule_rules.int8_matmul import Int8MatmulAVX2

    rows = ["| shape | fp32 ms | int8 old (vpmulld) ms | int8 vpmaddwd ms | vpmaddwd / fp32 | old / fp32 | old == vpmaddwd output |",
            "|---|---|---|---|---|---|---|"]
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
        old, _ = int8.rewrite(fp32, packed=False)
        new, _ = int8.rewrite(fp32, packed=True)
        data = tvm.runtime.tensor(rng.standard_normal((s, k)).astype(np.float32))
        fns = {"fp32": _vm(fp32)["main"], "old": _vm(old)["main"], "new": _vm(new, (Int8MatmulAVX2(),) + DEFAULT_RULES)["main"]}
        same = np.array_equal(fns["old"](data).numpy(), fns["new"](data).numpy())
        ms = interleaved_ms({name: (lambda f=f: f(data)) for name, f in fns.items()}, args.rounds, args.number)
        rows.append(f"| [{s},{k}]x[{k},{n}] | {ms['fp32']:.2f} | {ms['old']:.2f} | {ms['new']:.2f} | {ms['new'] / ms['fp32']:.2f} | "
                    f"{ms['old'] / ms['fp32']:.2f} | {'yes' if same else 'NO'} |")
        print(rows[-1], f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def bench_minilm(args) -> list[str]:
    from bench_quantize import embed, minilm_setup, ort_runner

    import tvm_autoglm
    from tvm_autoglm.quantize import int8
    from tvm_autoglm.quantize.sensitivity import cosine

    path, qpath, samples = minilm_setup(args)
    shapes = {"input_ids": [1, args.seq], "attention_mask": [1, args.seq]}
    runners = {"onnxruntime fp32": ort_runner(path, args.threads), "onnxruntime quantize_dynamic (u8 act, s8 weight)": ort_runner(qpath, args.threads)}
    notes = {}

    def build(label, **kw):
        start = time.perf_counter()
        model = tvm_autoglm.compile(str(path), "cpu", 3, shapes, **kw)
        rules = model.manifest.get("tuning", {})
        notes[label] = f"compile {time.perf_counter() - start:.0f} s; kernels default-scheduled {rules.get('default_scheduled_kernels')}, plain {rules.get('plain_kernels')}"
        runners[label] = (lambda m: (lambda x: m.run(x)["last_hidden_state"]))(model)
        print(label, notes[label], flush=True)

    build("tvm-autoglm fp32")
    packed = int8.use_packed
    int8.use_packed = lambda spec: False
    try:
        build("tvm-autoglm int8, old path (int8 R.matmul, vpmulld)", quantize="int8")
    finally:
        int8.use_packed = packed
    int8.use_packed = lambda spec: True  # forced: use_packed() refuses while the rule is not in the default rules
    try:
        build("tvm-autoglm int8, packed int16, no int8 rule (generic Matmul rule)", quantize="int8")
    finally:
        int8.use_packed = packed
    _rules, restore = with_int8_rule()
    try:
        build("tvm-autoglm int8, packed int16 + Int8MatmulAVX2 (vpmaddwd)", quantize="int8")
    finally:
        restore()

    ref = [embed(runners["onnxruntime fp32"](s), s["attention_mask"]) for s in samples]
    cos = {}
    for label, run in runners.items():
        embs = [embed(run(s), s["attention_mask"]) for s in samples]
        cos[label] = [cosine(a, b) for a, b in zip(ref, embs)]
    load = os.getloadavg()
    ms = interleaved_ms({label: (lambda r=run: r(samples[0])) for label, run in runners.items()}, args.rounds, args.number)
    fp32 = ms["tvm-autoglm fp32"]
    rows = ["| build | mean cosine (8) | min cosine (8) | median ms | / tvm fp32 | notes |", "|---|---|---|---|---|---|"]
    for label in runners:
        rows.append(f"| {label} | {np.mean(cos[label]):.5f} | {min(cos[label]):.5f} | {ms[label]:.2f} | {ms[label] / fp32:.2f} | {notes.get(label, '')} |")
        print(rows[-1], flush=True)
    rows.append("")
    rows.append(f"Load average before / after timing: {load[0]:.2f} / {os.getloadavg()[0]:.2f} (2 cores).")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["matmul", "minilm"])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=3, help="calls per timed sample")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (TVM uses the target's num-cores)")
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent.parent / ".cache" / "bench_quantize"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = bench_matmul(args) if args.what == "matmul" else bench_minilm(args)
    if not args.no_write:
        cmd = "nice -n 19 .venv/bin/python benchmarks/bench_int8_avx2.py " + " ".join(sys.argv[1:])
        with RESULTS.open("a") as fh:
            fh.write(f"\n### {args.what}, interleaved ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at start {load[0]:.2f})\n\n")
            fh.write(f"Command: `{cmd}`\n\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
