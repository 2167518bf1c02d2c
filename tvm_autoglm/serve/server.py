"""Run the app under uvicorn with a socket we bind ourselves.

Binding before uvicorn starts turns "address in use" into a one-line error,
allows ``--port 0`` (the chosen port is printed), and the artifact is verified
(sha256, versions, batch layout) before anything listens. SIGTERM is a
graceful stop: uvicorn closes the listener, lets in-flight requests finish
(up to ``graceful_timeout_s``), then the batcher drains and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys

from ..errors import AutoGLMError
from .config import ServeConfig


def _require_deps():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise AutoGLMError(
            f"auto-glm serve needs starlette and uvicorn ({err.name} is missing)", hint="pip install 'tvm_autoglm[serve]'"
        ) from None


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise AutoGLMError(f"cannot resolve --host {host}: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise AutoGLMError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tvm_threads(config: ServeConfig) -> int:
    """Threads per worker for TVM's parallel loops: --tvm-threads, else TVM_NUM_THREADS, else (cores - 1) // workers.

    Each worker thread gets its own TVM thread pool, whose threads spin while
    waiting; K pools of `cores` threads plus the event loop oversubscribe the
    machine and a parallel loop then waits for a descheduled sibling (measured
    on 2 cores: a 0.5 ms batch-16 call took ~90 ms under HTTP load with TVM's
    default of one thread per core, 1.4 ms with one thread). One core is left
    for the event loop that parses requests.
    """
    if config.tvm_threads:
        return config.tvm_threads
    if os.environ.get("TVM_NUM_THREADS", "").isdigit() and int(os.environ["TVM_NUM_THREADS"]) > 0:
        return int(os.environ["TVM_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, (cores - 1) // max(1, config.workers))


def serve(config: ServeConfig) -> int:
    _require_deps()
    import uvicorn

    from ..runtime.session import device_for, resolve_artifact
    from .app import create_app
    from .batching import Layout
    from .engine import Engine

    if config.workers < 1:
        raise AutoGLMError(f"--workers must be at least 1, got {config.workers}")
    if config.tvm_threads is not None and config.tvm_threads < 1:
        raise AutoGLMError(f"--tvm-threads must be at least 1, got {config.tvm_threads}")
    if config.batch_timeout_ms < 0:
        raise AutoGLMError(f"--batch-timeout-ms must be 0 or more, got {config.batch_timeout_ms}")
    threads = tvm_threads(config)
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when each worker's thread pool starts
    library, manifest = resolve_artifact(config.binary)
    device_for(manifest)  # a CUDA build on a machine without a GPU: say so before listening
    layout = Layout.from_manifest(manifest, config.max_batch, config.length_buckets, config.padding_masks)
    engine = Engine(library, manifest, workers=config.workers, warmup_runs=config.warmup_runs)
    app = create_app(config, engine, layout)

    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    if not _is_loopback(config.host):
        print(
            f"auto-glm serve: warning: listening on {config.host}, reachable from other machines; the server has no authentication",
            file=sys.stderr,
        )
    shown = f"[{host}]" if ":" in host else host
    print(f"auto-glm serve: {config.binary} on http://{shown}:{port} (batching: {layout.describe()}; workers: {engine.workers} x {threads} TVM thread(s))", flush=True)

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=config.access_log,
            timeout_graceful_shutdown=config.graceful_timeout_s,
            lifespan="on",
        )
    )
    app.state.live["server"] = server

    # uvicorn re-raises the signal that stopped it once it has shut down; a graceful
    # SIGTERM should end with exit status 0, so that re-raise lands on a no-op handler.
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if engine.state == "failed":
        return 1
    print("auto-glm serve: stopped", file=sys.stderr, flush=True)
    return 0
