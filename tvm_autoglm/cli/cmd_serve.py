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
        help="pack up to N requests into one call; the build's first dimension must be a batch dimension of size >= N "
        "shared by all inputs and outputs, and requests then send 1..B rows (default: no batching, exact shapes)",
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
        )
    )
