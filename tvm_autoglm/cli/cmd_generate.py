"""``auto-glm generate``: run a compiled generator on a prompt of token ids (and ``compile --generate``'s flags).

Token ids in, token ids out: the artifact has no tokenizer. ``--stream`` prints each
token as soon as it is chosen.
"""

from __future__ import annotations

import sys


def add_parser(subparsers):
    parser = subparsers.add_parser("generate", help="generate tokens with a compiled generator (compile --generate)")
    parser.add_argument("--binary", required=True, help="the generator artifact (.so with its .json, or .glm)")
    parser.add_argument("--prompt-ids", required=True, help="comma-separated prompt token ids, e.g. 1,2,3")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--eos-token-id", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream", action="store_true", help="print each token id as it is generated")
    return parser


def parse_ids(text: str) -> list[int]:
    from ..errors import AutoGLMError

    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise AutoGLMError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise AutoGLMError("--prompt-ids is empty")
    return ids


def run(args) -> int:
    from ..runtime import load

    session = load(args.binary)
    tokens = session.generate(parse_ids(args.prompt_ids), args.max_new_tokens, stream=args.stream, do_sample=args.do_sample,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              eos_token_id=args.eos_token_id, seed=args.seed)
    if args.stream:
        first = True
        for token in tokens:
            print(("" if first else ",") + str(token), end="", flush=True)
            first = False
        print()
    else:
        print(",".join(str(int(t)) for t in tokens))
    return 0


def add_generator_flags(parser) -> None:
    """``compile --generate`` flags (kept here so cmd_compile only forwards)."""
    from ..generate.layout import PAST_PATTERN, PRESENT_PATTERN

    group = parser.add_argument_group("generation (decoder-only models with a KV cache)")
    group.add_argument("--generate", action="store_true", help="build a generator: prefill + decode over a preallocated KV cache")
    group.add_argument("--max-context", type=int, default=2048, help="cache size in tokens (prompt + new tokens), default 2048")
    group.add_argument("--prefill-chunk", type=int, default=None, help="prompt tokens per prefill call (default 128; 0: token by token)")
    group.add_argument("--cache-input-pattern", default=PAST_PATTERN, help=f"regex of cache inputs (default {PAST_PATTERN})")
    group.add_argument("--cache-output-pattern", default=PRESENT_PATTERN, help=f"regex of cache outputs (default {PRESENT_PATTERN})")


def compile_generator(args, log) -> int:
    from ..artifact import export
    from ..errors import AutoGLMError
    from ..generate.build import compile_generator_parts
    from ..native_log import quiet_native_stderr

    if args.quantize not in ("none", "wint8"):
        raise AutoGLMError(f"--generate takes --quantize none or wint8 (weight-only int8 for decode), got {args.quantize}")
    if getattr(args, "freeze_input", None) or getattr(args, "input_shape", None) or getattr(args, "calibration", None):
        raise AutoGLMError("--generate sets the input shapes itself and does not combine with --freeze, --input-shape or --calibration")
    done = compile_generator_parts(
        args.model, args.target, args.optimize_level, args.tuning_db, max_context=args.max_context,
        prefill_chunk=args.prefill_chunk, past_pattern=args.cache_input_pattern, present_pattern=args.cache_output_pattern,
        disabled_passes=tuple(args.disable_pass), use_shipped_schedules=not args.no_shipped_schedules,
        quantize=args.quantize, accuracy_budget=args.accuracy_budget, log=log, weights=args.weights)
    build, manifest = done.build, done.manifest
    with log.stage("export"), quiet_native_stderr():
        path = export(done.executable, manifest, args.output, weights=done.scheduled.weights)
    gen = manifest["generator"]
    print(f"wrote {path} (generator, target {build.target.name}, max context {gen['max_context']}, "
          f"{gen['cache']['layers'] if 'layers' in gen['cache'] else len(gen['cache']['past'])} cache layers, prefill chunk {gen['prefill_chunk']})",
          file=sys.stderr if args.quiet else sys.stdout)
    if build.quantization:
        from ..quantize.wint8_build import layer_lines

        print("\n".join(layer_lines(build.quantization)), file=sys.stderr if args.quiet else sys.stdout)
    return 0


def bench_generator(args) -> int:
    """``auto-glm bench --generate``: our generator vs onnxruntime running the source ONNX with its cache loop."""
    import json
    import os
    import resource

    import numpy as np

    from ..errors import AutoGLMError
    from ..generate.timing import time_generation
    from ..runtime import load

    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    session = load(args.binary)
    info = session.manifest.get("generator")
    if not info:
        raise AutoGLMError(f"{args.binary} is not a generator; compile it with --generate")
    if args.prompt < 1 or args.new < 2 or args.prompt + args.new - 1 > info["max_context"]:
        raise AutoGLMError(f"--prompt {args.prompt} and --new {args.new} must fit the max context {info['max_context']} (prompt >= 1, new >= 2)")
    unknown = [v for v in args.vs if v != "ort"]
    if unknown:
        raise AutoGLMError(f"bench --generate compares with --vs ort only (got {unknown}); benchmarks/bench_generate.py adds torch for zoo models")
    from ..generate.runner import CompiledStepper

    stepper = CompiledStepper(session)
    prompt = np.random.default_rng(0).integers(0, stepper.vocab_size, args.prompt).tolist()
    repeat = min(args.repeat, 5)
    rows = {"tvm_autoglm": time_generation(stepper, prompt, args.new, repeat)}
    if "ort" in args.vs:
        from ..generate.reference import OrtStepper

        model = args.model or session.manifest.get("source")
        if not model or not os.path.isfile(model):
            raise AutoGLMError("--vs ort needs the ONNX model: pass --model (the manifest's source path is missing)")
        rows["onnxruntime"] = time_generation(OrtStepper(model, threads=args.threads), prompt, args.new, repeat)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"prompt": args.prompt, "new": args.new, "engines": rows, "peak_rss_mb": peak_mb}))
        return 0
    base = rows.get("onnxruntime", {}).get("tokens")
    print(f"prompt {args.prompt}, {args.new} new tokens, max context {info['max_context']}, medians of {repeat}")
    print(f"{'engine':12s} {'prefill/TTFT ms':>15s} {'decode tok/s':>12s}  same greedy tokens as onnxruntime")
    for name, row in rows.items():
        same = "-" if base is None else str(row["tokens"] == base)
        print(f"{name:12s} {row['prefill_ms']:15.1f} {row['decode_tokens_per_s']:12.1f}  {same}")
    print(f"peak memory of this process (all engines): {peak_mb:.0f} MB")
    return 0
