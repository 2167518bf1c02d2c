"""``auto-glm zoo``: export a zoo model (seeded random weights, real architecture) to ONNX.

Gives every user and test the same real-world graphs (BERT, GPT-NeoX,
ResNet-50) without downloading weights; ``--list`` shows what exists.
"""

from __future__ import annotations

import sys


def add_parser(subparsers):
    parser = subparsers.add_parser("zoo", help="export a zoo model (BERT, GPT-NeoX, ResNet-50; seeded random weights) to ONNX")
    parser.add_argument("name", nargs="?", help="model name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the models and their sizes")
    parser.add_argument("--size", default="tiny", help="tiny | base | large (default tiny; see --list)")
    parser.add_argument("--seq", type=int, default=128, help="sequence length for text models (default 128)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"], help="torch ONNX exporter (default dynamo, opset 18; torchscript: opset 17)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--dynamic", action="store_true", help="export batch/sequence as symbolic dims")
    parser.add_argument("--with-cache", action="store_true",
                        help="causal LM with KV cache inputs/outputs (gpt-neox, gpt2, llama; sizes tiny | small | base)")
    parser.add_argument("--output", "-o", default=None, metavar="M.onnx", help="where to write the model (default: the zoo cache)")
    return parser


def run(args) -> int:
    from .. import zoo
    from ..errors import AutoGLMError

    if args.list:
        for info in zoo.MODELS.values():
            print(f"{info.name:10s} sizes: {', '.join(info.sizes):18s} inputs: {', '.join(info.inputs):26s} {info.description}")
        from ..zoo import causal_lm

        for arch in causal_lm.ARCHS:
            print(f"{arch + ' --with-cache':10s} sizes: {', '.join(causal_lm.SIZES[arch]):18s} {causal_lm.DESCRIPTIONS[arch]}")
        return 0
    if not args.name:
        raise AutoGLMError("zoo needs a model name", hint=f"one of: {', '.join(zoo.MODELS)}; or --list")
    if args.with_cache:
        from ..zoo import causal_lm

        path = zoo.build_with_cache(args.name, args.size, args.output, seed=args.seed)
        layers, heads, head_dim = causal_lm.cache_shape(args.name, args.size)
        print(path)
        print(f"inputs: input_ids, attention_mask, position_ids, past_key_values.0..{layers - 1}.key/value "
              f"[batch, {heads}, past, {head_dim}] (symbolic batch/sequence/past)", file=sys.stderr)
        return 0
    if args.output:
        path = zoo.build(args.name, args.size, args.seq, args.batch, args.exporter, output=args.output, seed=args.seed, dynamic=args.dynamic)
    else:
        path = zoo.cached(args.name, args.size, args.seq, args.batch, args.exporter, seed=args.seed, dynamic=args.dynamic)
    shapes = zoo.input_shapes(args.name, args.size, args.seq, args.batch)
    print(path)
    print("inputs: " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items()), file=sys.stderr)
    return 0
