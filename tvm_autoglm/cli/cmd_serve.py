"""``auto-glm serve``: serve a compiled artifact over HTTP (see docs/deploy.md)."""

from __future__ import annotations

from .common import add_binary_flag


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve",
        help="serve a compiled .so/.glm over HTTP (/v1/infer, /health, /ready, /metrics)",
        description="Serve a compiled artifact over HTTP. Needs the [serve] extra (starlette, uvicorn).",
    )
    add_binary_flag(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one and prints it)")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="pack up to N requests into one call (states that rows are independent); the build's first dimension must be a "
        "batch dimension shared by all inputs and outputs: a size B >= N (requests send 1..B rows, zero-padded) or, in a dynamic "
        "build, a symbol (requests of equal shape are stacked) (default: no batching, each request alone)",
    )
    parser.add_argument(
        "--length-bucket",
        action="append",
        default=[],
        metavar="DIM=G",
        help="dynamic builds: pad each request along the symbolic dim DIM up to a multiple of G (capped at its maximum), so near "
        "lengths share one call; needs --padding-mask for DIM (repeatable)",
    )
    parser.add_argument(
        "--padding-mask",
        action="append",
        default=[],
        metavar="DIM=INPUT",
        help="states that the model ignores positions along DIM where the input INPUT is 0 (e.g. seq=attention_mask); the server "
        "sets INPUT to 0 on the padding --length-bucket adds. Without it nothing is padded (repeatable)",
    )
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0, metavar="T", help="wait up to T ms after a request for others to join its batch (default 2)")
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="worker threads running model calls in parallel (default 1)")
    parser.add_argument(
        "--tvm-threads",
        type=int,
        default=None,
        metavar="N",
        help="TVM threads per worker (default: $TVM_NUM_THREADS, else (cores - 1) // workers, at least 1)",
    )
    parser.add_argument("--max-queue", type=int, default=1024, help="queued requests beyond which the server answers 503 (default 1024)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted, in MiB (default 64)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0, metavar="S", help="on SIGTERM, wait up to S seconds for in-flight requests (default 30)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="warm-up runs per worker before /ready turns 200 (default 1)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    return parser


def run(args) -> int:
    from ..serve import ServeConfig, serve
    from ..serve.padding import parse_length_buckets, parse_padding_masks

    return serve(
        ServeConfig(
            binary=args.binary,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            batch_timeout_ms=args.batch_timeout_ms,
            workers=args.workers,
            max_queue=args.max_queue,
            max_body_bytes=int(args.max_body_mb * (1 << 20)),
            graceful_timeout_s=args.graceful_timeout,
            warmup_runs=args.warmup,
            access_log=args.access_log,
            tvm_threads=args.tvm_threads,
            length_buckets=parse_length_buckets(args.length_bucket),
            padding_masks=parse_padding_masks(args.padding_mask),
        )
    )
