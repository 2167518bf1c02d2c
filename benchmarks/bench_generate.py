"""Generation speed: our compiled generator vs onnxruntime's cache loop vs torch eager, on zoo causal LMs.

    TVM_NUM_THREADS=2 .venv/bin/python benchmarks/bench_generate.py --model gpt-neox --size small --prompt 128 --new 128
    .venv/bin/python benchmarks/bench_generate.py --model llama --size tiny --max-context 512 --threads 1

Per engine: prefill ms (prompt -> logits of its last token; this is the time to first
token), decode tokens/s over the remaining new tokens (median of ``--repeat`` runs), and
whether its greedy tokens equal onnxruntime's. Engines run one after another with a
0.25 s pause (thread pools keep spinning after a run). The generator is compiled with
``--max-context`` slots (default prompt + new); decode attends over the valid prefix only
(``passes/decode_attention``), so a larger max context costs little decode time.
torch: the same transformers model with its own DynamicCache (``model.generate`` greedy,
``torch.set_num_threads(--threads)``).

Memory-bandwidth limit: a decode step reads every matmul weight once
(``generate/weight_bytes.py``, counted from the ONNX graph), so tokens/s <= read bandwidth /
weight bytes; the bandwidth is measured here, with the bench's threads
(``measure/bandwidth.py``, before the runs and after every round: the median is used), and
each engine's decode is reported as a % of that limit.
``--ab-without-rule Gemv`` also builds the generator with that default schedule rule left
out and times both builds interleaved (round by round) in this process: before / after.
``--quantize wint8`` adds our weight-only int8 build: fp32 and wint8 then run interleaved
(one generation each per round, ``--repeat`` rounds, medians), and the line reports the
worst per-token logit cosine of wint8 against our fp32 build over the greedy run, and the
load average (``/proc/loadavg``) before and after the rounds: the box is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_interleaved(steppers: dict, prompt, new, repeat, between=None):
    """name -> (prefill ms, decode tok/s, tokens): medians over ``repeat`` rounds, one generation per engine per round.

    Every other round runs the engines in reverse order (on a shared machine whoever runs first
    or last in a round would otherwise always meet the same neighbours); ``between()`` runs after
    each round (the bandwidth measurement, so that it samples the same load as the engines).
    """
    from tvm_autoglm.generate.timing import time_generation

    runs = {name: [] for name in steppers}
    for round_ in range(max(1, int(repeat))):
        order = list(steppers) if round_ % 2 == 0 else list(reversed(steppers))
        for name in order:
            runs[name].append(time_generation(steppers[name], prompt, new, 1))
        if between is not None:
            between()
    return {name: (statistics.median(r["prefill_ms"] for r in results), statistics.median(r["decode_tokens_per_s"] for r in results),
                   results[-1]["tokens"]) for name, results in runs.items()}


def compile_without_rule(path, rule: str, **kwargs):
    """The generator built with the default schedule rule ``rule`` left out (the 'before' of an A/B)."""
    from unittest import mock

    import tvm_autoglm
    from tvm_autoglm import schedule_rules

    rules = tuple(r for r in schedule_rules.DEFAULT_RULES if type(r).__name__ != rule)
    if len(rules) == len(schedule_rules.DEFAULT_RULES):
        raise SystemExit(f"--ab-without-rule: no default rule named {rule}")
    with mock.patch.object(schedule_rules, "DEFAULT_RULES", rules):
        return tvm_autoglm.compile(path, **kwargs)


def run_torch(arch, size, prompt, new, repeat, threads):
    import torch

    from tvm_autoglm.zoo import causal_lm

    torch.set_num_threads(threads)
    model = causal_lm.make(arch, size, seed=0).model
    ids = torch.tensor([prompt])
    prefill, decode, tokens = [], [], None
    with torch.no_grad():
        for _ in range(repeat):
            time.sleep(0.25)
            t = time.perf_counter()
            model(input_ids=ids, use_cache=True)
            first = time.perf_counter() - t
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False, min_new_tokens=new,
                                 pad_token_id=0)
            total = time.perf_counter() - t
            prefill.append(first)
            decode.append((new - 1) / max(total - first, 1e-9))
            tokens = out[0, len(prompt):].numpy()
    return statistics.median(prefill) * 1e3, statistics.median(decode), tokens


def forced_logits(stepper, prompt, tokens) -> np.ndarray:
    """Logits [len(tokens), vocab]: the prompt's last position, then each of ``tokens[:-1]`` fed in turn."""
    stepper.reset()
    rows = [stepper.step(np.array(prompt), 0)]
    for position, token in enumerate(tokens[:-1], start=len(prompt)):
        rows.append(stepper.step(np.array([token]), position))
    return np.asarray(rows, np.float64)


def compare_wint8(fp32_model, wint8_model, prompt, new, rounds):
    """fp32 vs wint8 interleaved: per round one timed generation of each; medians, logit cosine, load average.

    The models are runtime Sessions (``--wint8-binaries``) or CompiledModels; both have ``generate``."""
    from tvm_autoglm.generate.runner import CompiledStepper

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    steppers = {name: CompiledStepper(getattr(m, "_session", m)) for name, m in (("fp32", fp32_model), ("wint8", wint8_model))}
    med = {name: row[:2] for name, row in run_interleaved(steppers, prompt, new, rounds).items()}
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    # teacher-forced along fp32's greedy tokens: both see the same history (free-running, one near-tie flip
    # makes every later logit incomparable)
    tokens_f = [int(t) for t in fp32_model.generate(prompt, max_new_tokens=new)]
    tokens_q = [int(t) for t in wint8_model.generate(prompt, max_new_tokens=new)]
    a, b = (forced_logits(steppers[name], prompt, tokens_f) for name in ("fp32", "wint8"))
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    same = sum(int(x == y) for x, y in zip(a.argmax(1), b.argmax(1)))
    first_flip = next((i for i, (x, y) in enumerate(zip(tokens_f, tokens_q)) if x != y), len(tokens_f))
    print(f"{'build':6s} {'prefill ms':>10s} {'decode tok/s':>12s}")
    for name, (prefill_ms, tok_s) in med.items():
        print(f"{name:6s} {prefill_ms:10.1f} {tok_s:12.1f}")
    print(f"wint8/fp32 decode {med['wint8'][1] / med['fp32'][1]:.2f}x, prefill {med['fp32'][0] / med['wint8'][0]:.2f}x; "
          f"teacher-forced logit cosine vs fp32 min {cosine.min():.5f} mean {cosine.mean():.5f}, same argmax {same}/{len(tokens_f)}; "
          f"free-running greedy tokens equal up to step {first_flip}; "
          f"loadavg before {' '.join(load_before)}, after {' '.join(load_after)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-neox", choices=["gpt-neox", "gpt2", "llama"])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--max-context", type=int, default=None)
    parser.add_argument("--prefill-chunk", type=int, default=None, help="default: the prompt length")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vs", action="append", default=[], choices=["ort", "torch"], help="peers (default: ort and torch)")
    parser.add_argument("--ab-without-rule", default=None, metavar="RULE",
                        help="also time a build without this default schedule rule (e.g. Gemv), interleaved")
    parser.add_argument("--prebuilt", action="append", default=[], metavar="LABEL=PATH",
                        help="also time this generator artifact (.so from `compile --generate` of the same zoo model), interleaved")
    parser.add_argument("--skip-compile", action="store_true", help="time only --prebuilt artifacts and the peers")
    parser.add_argument("--quantize", default="none", choices=["none", "wint8"], help="also build wint8 and compare it with fp32")
    parser.add_argument("--wint8-binaries", nargs=2, metavar=("FP32_SO", "WINT8_SO"),
                        help="compare two generators already compiled (compile --generate [--quantize wint8]): no compile here")
    args = parser.parse_args()
    import os

    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import tvm_autoglm
    from tvm_autoglm.generate.reference import OrtStepper
    from tvm_autoglm.generate.runner import CompiledStepper
    from tvm_autoglm.zoo import causal_lm

    if args.wint8_binaries:
        from tvm_autoglm.runtime import load

        fp32_so, wint8_so = (load(path) for path in args.wint8_binaries)
        vocab = causal_lm.config(args.model, args.size).vocab_size
        prompt = np.random.default_rng(0).integers(0, vocab, args.prompt).tolist()
        print(f"{args.model} {args.size}: prompt {args.prompt}, {args.new} new, {args.threads} threads, {args.wint8_binaries}")
        compare_wint8(fp32_so, wint8_so, prompt, args.new, args.repeat)
        return 0
    peers = args.vs or ["ort", "torch"]
    max_context = args.max_context or args.prompt + args.new
    chunk = args.prefill_chunk if args.prefill_chunk is not None else args.prompt
    prompt = np.random.default_rng(0).integers(0, causal_lm.config(args.model, args.size).vocab_size, args.prompt).tolist()
    from tvm_autoglm.generate.weight_bytes import kv_cache_bytes, matmul_weight_bytes
    from tvm_autoglm.measure.bandwidth import measure_read_bandwidth, tokens_per_s_limit

    bandwidth = [measure_read_bandwidth(args.threads)["gb_per_s"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = causal_lm.export(args.model, args.size, Path(tmp) / "m.onnx")
        import onnx

        weight_bytes = matmul_weight_bytes(onnx.load(str(path)))
        layers, kv_heads, head_dim = causal_lm.cache_shape(args.model, args.size)
        cache_bytes = kv_cache_bytes(layers, kv_heads, head_dim, max_context)
        options = dict(generate=True, max_context=max_context, prefill_chunk=chunk)
        from tvm_autoglm import runtime

        steppers, compile_s = {}, 0.0
        for item in args.prebuilt:
            label, _, artifact = item.partition("=")
            steppers[label] = CompiledStepper(runtime.load(artifact))
        if not args.skip_compile:
            t = time.perf_counter()
            model = tvm_autoglm.compile(path, **options)
            compile_s = time.perf_counter() - t
            steppers["tvm_autoglm"] = CompiledStepper(model._session)
            if args.quantize == "wint8":
                t = time.perf_counter()
                quantized = tvm_autoglm.compile(path, quantize="wint8", **options)
                print(f"wint8 compile {time.perf_counter() - t:.0f} s; {quantized.build.quantization['counts']}")
                compare_wint8(model, quantized, prompt, args.new, args.repeat)
                return 0
        if args.ab_without_rule:
            before = compile_without_rule(path, args.ab_without_rule, **options)
            steppers = {f"w/o {args.ab_without_rule}": CompiledStepper(before._session), **steppers}
        if "ort" in peers:
            steppers["onnxruntime"] = OrtStepper(path, threads=args.threads)
        timed = run_interleaved(steppers, prompt, args.new, args.repeat,
                                between=lambda: bandwidth.append(measure_read_bandwidth(args.threads, repeats=5)["gb_per_s"]))
        rows = [(name, *timed[name]) for name in steppers]
        if "torch" in peers:
            rows.append(("torch eager", *run_torch(args.model, args.size, prompt, args.new, args.repeat, args.threads)))
    bandwidth.append(measure_read_bandwidth(args.threads)["gb_per_s"])
    gb_s = statistics.median(bandwidth)
    limit = tokens_per_s_limit(weight_bytes, gb_s)
    ref = next((r[3] for r in rows if r[0] == "onnxruntime"), rows[0][3])
    print(f"{args.model} {args.size}: prompt {args.prompt}, {args.new} new, max context {max_context}, prefill chunk {chunk}, "
          f"{args.threads} threads, compile {compile_s:.0f} s")
    print(f"decode reads {weight_bytes / 1e6:.1f} MB of matmul weights per token (+ {cache_bytes / 1e6:.1f} MB KV cache at "
          f"{max_context} slots); read bandwidth {gb_s:.1f} GB/s ({args.threads} threads, median of "
          f"{'/'.join(f'{b:.1f}' for b in bandwidth)}: before, after each round, after) -> limit {limit:.1f} tok/s")
    print(f"{'engine':12s} {'prefill ms':>10s} {'decode tok/s':>12s} {'% of limit':>10s}  same greedy tokens as onnxruntime")
    for name, prefill_ms, tok_s, tokens in rows:
        print(f"{name:12s} {prefill_ms:10.1f} {tok_s:12.1f} {100 * tok_s / limit:9.0f}%  {list(tokens) == list(ref)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
