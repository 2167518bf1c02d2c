"""Decode attention A/B: the generator with and without ``decode_attention`` (valid-prefix attention, K/V read in place).

    TVM_NUM_THREADS=2 .venv/bin/python benchmarks/bench_decode_attention.py --model gpt-neox --size small \
        --max-context 256 --max-context 2048 --rounds 5

Builds each (max context, variant) once, each in its own process (compile memory is returned
between builds), into ``--build-dir`` (kept and reused if present; ``off`` = ``--disable-pass
decode_attention``, i.e. the full-slot attention with its K transpose per step), then loads the
artifacts with the lean runtime and runs the generations interleaved:
each round runs every build once (prompt, then ``--new`` greedy tokens) and prints the decode tok/s
and the 1-minute load average; the summary is the median per build. Tokens must agree across builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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
    parser.add_argument("--build-dir", default="bench-decode-attention")
    parser.add_argument("--only", nargs=2, metavar=("MAX_CONTEXT", "on|off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import tvm_autoglm
    from tvm_autoglm import runtime
    from tvm_autoglm.generate.runner import CompiledStepper
    from tvm_autoglm.generate.timing import time_generation
    from tvm_autoglm.zoo import causal_lm

    contexts = args.max_context or [256, 2048]
    prompt = np.random.default_rng(0).integers(0, causal_lm.config(args.model, args.size).vocab_size, args.prompt).tolist()
    out = Path(args.build_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{args.model}-{args.size}.onnx"
    if args.only:
        ctx, variant = int(args.only[0]), args.only[1]
        disabled = ("decode_attention",) if variant == "off" else ()
        model = tvm_autoglm.compile(onnx_path, generate=True, max_context=ctx, prefill_chunk=args.prompt, disabled_passes=disabled)
        model.export(str(out / f"{args.model}-{args.size}-{ctx}-{variant}.so"))
        return 0
    if not onnx_path.exists():
        causal_lm.export(args.model, args.size, onnx_path)
    builds = {}
    for ctx in contexts:
        for variant in ("off", "on"):
            so = out / f"{args.model}-{args.size}-{ctx}-{variant}.so"
            if not so.exists():
                subprocess.run([sys.executable, __file__, "--model", args.model, "--size", args.size, "--prompt", str(args.prompt),
                                "--build-dir", str(out), "--only", str(ctx), variant], check=True)
            builds[(ctx, variant)] = CompiledStepper(runtime.load(str(so)))
            print(f"loaded max_context {ctx} decode_attention {variant}", flush=True)
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
