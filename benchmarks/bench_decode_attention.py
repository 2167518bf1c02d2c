"""Decode attention A/B: the generator with and without ``decode_attention`` (valid-prefix attention, K/V read in place).

    TVM_NUM_THREADS=2 .venv/bin/python benchmarks/bench_decode_attention.py --model gpt-neox --size small \
        --max-context 256 --max-context 2048 --rounds 5

Builds each (max context, variant) once (``off`` = ``--disable-pass decode_attention``, i.e. the
full-slot attention with its K transpose per step), then runs the generations interleaved:
each round runs every build once (prompt, then ``--new`` greedy tokens) and prints the decode tok/s
and the 1-minute load average; the summary is the median per build. Tokens must agree across builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-neox", choices=["gpt-neox", "gpt2", "llama"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--max-context", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import tvm_autoglm
    from tvm_autoglm.generate.runner import CompiledStepper
    from tvm_autoglm.generate.timing import time_generation
    from tvm_autoglm.zoo import causal_lm

    contexts = args.max_context or [256, 2048]
    prompt = np.random.default_rng(0).integers(0, causal_lm.config(args.model, args.size).vocab_size, args.prompt).tolist()
    builds = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = causal_lm.export(args.model, args.size, Path(tmp) / "m.onnx")
        for ctx in contexts:
            for variant, disabled in (("off", ("decode_attention",)), ("on", ())):
                model = tvm_autoglm.compile(path, generate=True, max_context=ctx, prefill_chunk=args.prompt, disabled_passes=disabled)
                builds[(ctx, variant)] = CompiledStepper(model._session)
                print(f"built max_context {ctx} decode_attention {variant}", flush=True)
    rates = {key: [] for key in builds}
    tokens = {}
    for r in range(args.rounds):
        for key, stepper in builds.items():
            result = time_generation(stepper, prompt, args.new, repeat=1)
            rates[key].append(result["decode_tokens_per_s"])
            tokens[key] = list(result["tokens"])
            print(f"round {r} max_context {key[0]:5d} decode_attention {key[1]:3s}: {result['decode_tokens_per_s']:6.2f} tok/s "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    same = len({tuple(t) for t in tokens.values()}) == 1
    print(f"{args.model} {args.size}: prompt {args.prompt}, {args.new} new, {args.threads} threads, greedy tokens identical across builds: {same}")
    for key, values in rates.items():
        print(f"max_context {key[0]:5d} decode_attention {key[1]:3s}: median {statistics.median(values):6.2f} tok/s "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
