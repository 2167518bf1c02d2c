"""The HTTP surface: a small Starlette app.

Every problem a client can cause is answered with a 4xx and a JSON
``{"error": "..."}`` that names it; model failures are a 500 with one line, the
traceback goes to the server's stderr only. ``/ready`` stays 503 until the
library is loaded and every worker has run a warm-up inference, so a load
balancer never routes traffic to a cold process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import AutoGLMError, InputError, describe
from ..runtime.inputs import check_index_ranges
from . import codec
from .batching import Batcher, Layout, Overloaded
from .config import ServeConfig
from .engine import Engine
from .metrics import CONTENT_TYPE, Metrics


OFFLOAD_BYTES = 256 << 10  # bodies above this are decoded/encoded off the event loop


class _TooLarge(Exception):
    pass


def _json(status: int, payload: dict, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type=codec.JSON, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


#: Fields of a /v1/generate request (the arguments of ``Session.generate``).
GENERATE_FIELDS = {"prompt_ids", "max_new_tokens", "stream", "do_sample", "temperature", "top_k", "top_p", "eos_token_id", "seed"}


def _batching_info(layout) -> dict:
    """/v1/model's batching settings; a dynamic build's length buckets only when it has them."""
    info = {"enabled": layout.batching, "max_requests": layout.max_requests, "rows_per_call": layout.capacity}
    padding = getattr(layout, "padding", None)
    if padding:
        info.update(length_buckets=dict(padding.buckets), padding_masks=dict(padding.masks))
    return info


def create_app(config: ServeConfig, engine: Engine, layout: Layout) -> Starlette:
    metrics = Metrics()
    live = {"inflight": 0, "batcher": None, "server": None}

    metrics.gauge("autoglm_queue_depth", "Requests waiting for a batch.", lambda: live["batcher"].queue_depth if live["batcher"] else 0)
    metrics.gauge("autoglm_inflight_requests", "Inference requests being handled now.", lambda: live["inflight"])
    metrics.gauge("autoglm_ready", "1 once the model is loaded and warmed up.", lambda: 1 if engine.ready else 0)
    metrics.gauge("autoglm_workers", "Worker threads running model calls.", lambda: engine.workers)
    metrics.gauge("autoglm_max_batch", "Requests packed into one call at most (1: no batching).", lambda: layout.max_requests)

    async def load() -> None:
        try:
            await asyncio.to_thread(engine.load_and_warm)
        except Exception as err:  # the library failed to load or to run: say so and stop
            engine.state, engine.error = "failed", describe(err)
            print(f"auto-glm serve: error: loading {engine.library} failed: {engine.error}", file=sys.stderr, flush=True)
            if live["server"] is not None:
                live["server"].should_exit = True
            return
        print(f"auto-glm serve: ready ({engine.workers} worker(s) warmed up)", file=sys.stderr, flush=True)

    @asynccontextmanager
    async def lifespan(app):
        executor = ThreadPoolExecutor(max_workers=engine.workers, thread_name_prefix="autoglm-worker")
        batcher = Batcher(layout, engine.execute, executor, engine.workers, config.batch_timeout_ms / 1000.0, config.max_queue, metrics)
        batcher.start()
        live["batcher"] = batcher
        loader = asyncio.get_running_loop().create_task(load())
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for in-flight requests by now.
            await batcher.close()
            if not loader.done():
                loader.cancel()
            executor.shutdown(wait=True)

    async def health(request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def ready(request: Request) -> Response:
        if engine.ready:
            return _json(200, {"status": "ready"})
        detail = {"status": engine.state}
        if engine.error:
            detail["error"] = engine.error
        return _json(503, detail)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def model_info(request: Request) -> Response:
        manifest = engine.manifest
        return _json(
            200,
            {
                "inputs": manifest["inputs"],
                "outputs": manifest["outputs"],
                "target": manifest.get("target", {}).get("name"),
                "batching": _batching_info(layout),
            },
        )

    async def handle(request: Request) -> Response:
        if not engine.ready:
            metrics.count_error("not_ready")
            return _json(503, {"error": f"model not ready ({engine.state})"}, {"Retry-After": "1"})
        try:
            body = await _read_body(request, config.max_body_bytes)
        except _TooLarge as err:
            metrics.count_error("too_large")
            return _json(413, {"error": str(err)})
        try:
            content_type = request.headers.get("content-type")
            if len(body) > OFFLOAD_BYTES:  # parsing megabytes of JSON would stall every other request
                arrays = await asyncio.to_thread(codec.decode, body, content_type, layout.inputs, engine.manifest.get("frozen_inputs"))
            else:
                arrays = codec.decode(body, content_type, layout.inputs, engine.manifest.get("frozen_inputs"))
            rows = layout.rows_of(arrays)
            check_index_ranges(arrays, engine.manifest.get("index_ranges"))  # before batching: one bad id must fail only its own request
        except InputError as err:
            metrics.count_error("bad_request")
            return _json(400, {"error": err.one_line()})
        try:
            outputs = await live["batcher"].submit(arrays, rows)
        except Overloaded as err:
            metrics.count_error("overloaded")
            return _json(503, {"error": str(err)}, {"Retry-After": "1"})
        except AutoGLMError as err:
            metrics.count_error("model")
            return _json(500, {"error": err.one_line()})
        except Exception as err:  # a raw TVM failure: one line to the client, the traceback to our stderr
            metrics.count_error("internal")
            traceback.print_exc(file=sys.stderr)
            return _json(500, {"error": f"internal error while running the model: {describe(err)}"})
        npz = codec.accepts_npz(request.headers.get("accept"))
        encode = codec.encode_npz if npz else codec.encode_json
        if sum(value.nbytes for value in outputs.values()) > OFFLOAD_BYTES // 4:
            payload = await asyncio.to_thread(encode, outputs)
        else:
            payload = encode(outputs)
        return Response(payload, media_type=codec.NPZ if npz else codec.JSON)

    async def generate(request: Request) -> Response:
        """POST /v1/generate {"prompt_ids": [...], "max_new_tokens": 64, "stream": false, sampling...}.

        ``stream: true`` answers with server-sent events, one ``data: {"token": id}`` per token as it
        is chosen and a last ``data: {"done": true, "tokens": [...]}``; a bad request is a 400 before
        any event.
        """
        if "generator" not in engine.manifest:
            return _json(404, {"error": "this model is not a generator (compile it with --generate)"})
        if not engine.ready:
            return _json(503, {"error": f"model not ready ({engine.state})"}, {"Retry-After": "1"})
        try:
            body = json.loads(await _read_body(request, config.max_body_bytes) or b"{}")
            if not isinstance(body, dict) or "prompt_ids" not in body:
                raise ValueError("the body must be a JSON object with 'prompt_ids'")
            unknown = set(body) - GENERATE_FIELDS
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}; accepted: {sorted(GENERATE_FIELDS)}")
        except _TooLarge as err:
            return _json(413, {"error": str(err)})
        except ValueError as err:
            return _json(400, {"error": " ".join(str(err).split())})
        kwargs = {k: v for k, v in body.items() if k not in ("prompt_ids", "stream")}
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_token(token: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("token", token))

        def run() -> None:
            try:
                tokens = engine.generate(body["prompt_ids"], on_token, **kwargs)
                loop.call_soon_threadsafe(events.put_nowait, ("done", tokens))
            except (AutoGLMError, TypeError, ValueError) as err:
                text = err.one_line() if isinstance(err, AutoGLMError) else " ".join(str(err).split())
                loop.call_soon_threadsafe(events.put_nowait, ("error", text))
            except Exception as err:  # a raw TVM failure: one line to the client, the traceback to our stderr
                traceback.print_exc(file=sys.stderr)
                loop.call_soon_threadsafe(events.put_nowait, ("error", f"internal error while generating: {_one_line(err)}"))

        worker = loop.run_in_executor(None, run)
        kind, value = await events.get()  # the first event decides the status code
        if kind == "error":
            await worker
            return _json(400, {"error": value})
        if not body.get("stream"):
            while kind == "token":
                kind, value = await events.get()
            await worker
            return _json(200 if kind == "done" else 500, {"tokens": value} if kind == "done" else {"error": value})

        async def sse():
            item = (kind, value)
            while True:
                if item[0] == "token":
                    yield f"data: {json.dumps({'token': item[1]})}\n\n"
                elif item[0] == "done":
                    yield f"data: {json.dumps({'done': True, 'tokens': item[1]})}\n\n"
                    break
                else:
                    yield f"data: {json.dumps({'error': item[1]})}\n\n"
                    break
                item = await events.get()
            await worker

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        live["inflight"] += 1
        try:
            response = await handle(request)
        finally:
            live["inflight"] -= 1
        metrics.count_request(response.status_code, time.perf_counter() - start)
        return response

    app = Starlette(
        routes=[
            Route("/v1/infer", infer, methods=["POST"]),
            Route("/v1/generate", generate, methods=["POST"]),
            Route("/v1/model", model_info, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.live = live
    app.state.metrics = metrics
    return app
