"""Dynamic batching on static-shape builds.

A TVM build has fixed shapes, so batching cannot grow a call: the user compiles
the model once for batch B (``--input-shape x:Bx...``) and serves it with
``--max-batch N`` (N <= B). Requests then carry 1..B rows along the first
dimension; the batcher packs up to N waiting requests whose rows fit in B into
one call, pads the remainder with zeros, and slices each request's rows back
out of the outputs. Padding is only sound when rows are independent, which the
user asserts by passing ``--max-batch``; without it the server runs each
request alone at exactly the manifest's shapes.

Dynamic builds (manifest ``symbolic_dims``) map requests through
``dynamic_layout.DynamicLayout`` instead: equal shapes stack along the batch
dim, and with ``--length-bucket``/``--padding-mask`` near lengths are padded to
a shared bucket. The batcher only puts requests with the same
``layout.group_key`` into one call.

The batcher takes a worker slot *before* collecting a batch: while every
worker is busy, requests wait in the queue and the next batch grows, which is
where batching pays off under load.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArtifactError, InputError


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


@dataclass
class Layout:
    """How requests map onto the build's static shapes."""

    inputs: list[dict]
    outputs: list[dict]
    capacity: int | None  # the build's batch dimension B in batch mode; None: exact shapes, one request per call
    max_requests: int = 1

    @classmethod
    def from_manifest(cls, manifest: dict, max_batch: int | None, buckets: dict | None = None, masks: dict | None = None):
        """The layout for this artifact: ``Layout`` for a static build, ``DynamicLayout`` for a dynamic one.

        ``buckets``/``masks``: ``--length-bucket``/``--padding-mask`` (dynamic builds only; see ``padding``)."""
        inputs, outputs = manifest["inputs"], manifest["outputs"]
        if manifest.get("symbolic_dims"):
            from .dynamic_layout import DynamicLayout

            return DynamicLayout.from_manifest(manifest, max_batch, buckets, masks)
        from .padding import plan_padding

        plan_padding(manifest, buckets or {}, masks or {}, None)  # a static build has no dim to bucket: refused
        if max_batch is None:
            return cls(inputs, outputs, None, 1)
        if max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {max_batch}")
        leading = {}
        for kind, specs in (("input", inputs), ("output", outputs)):
            for spec in specs:
                if not spec["shape"]:
                    raise ArtifactError(
                        f"--max-batch needs a batch dimension first in every input and output; {kind} '{spec['name']}' is a scalar: serve without --max-batch"
                    )
                leading[f"{kind} '{spec['name']}'"] = int(spec["shape"][0])
        sizes = set(leading.values())
        if len(sizes) != 1:
            listing = ", ".join(f"{k}: {v}" for k, v in leading.items())
            raise ArtifactError(
                f"--max-batch needs the same leading (batch) dimension in every input and output, found {listing}; "
                "recompile with one batch size (--input-shape NAME:BxDIMS) or serve without --max-batch"
            )
        capacity = sizes.pop()
        if max_batch > capacity:
            shapes = " ".join(f"{s['name']}:{max_batch}x{_dims(s['shape'][1:])}" if s["shape"][1:] else f"{s['name']}:{max_batch}" for s in inputs)
            raise ArtifactError(
                f"--max-batch {max_batch} exceeds the build's batch dimension {capacity}; "
                f"recompile with --input-shape {shapes}, or pass --max-batch {capacity} or less"
            )
        return cls(inputs, outputs, capacity, max_batch)

    @property
    def batching(self) -> bool:
        return self.capacity is not None

    def describe(self) -> str:
        if not self.batching:
            return "off (each request runs alone at the manifest's exact shapes)"
        return f"up to {self.max_requests} request(s) per call, {self.capacity} rows per call (zero-padded)"

    def rows_of(self, arrays: dict[str, np.ndarray]) -> int:
        """Check dtypes and shapes of one request; return its rows (1 in exact mode)."""
        rows = {}
        for spec in self.inputs:
            name, value = spec["name"], arrays[spec["name"]]
            want = np.dtype(spec["dtype"])
            if value.dtype != want:
                raise InputError(f"input '{name}' has dtype {value.dtype}, expected {want}")
            shape = tuple(int(d) for d in spec["shape"])
            if not self.batching:
                if tuple(value.shape) != shape:
                    raise InputError(f"input '{name}' has shape {_dims(value.shape)}, expected {_dims(shape)} ({want})")
                continue
            if value.ndim != len(shape) or tuple(value.shape[1:]) != shape[1:] or not 1 <= value.shape[0] <= self.capacity:
                raise InputError(
                    f"input '{name}' has shape {_dims(value.shape)}, expected Nx{_dims(shape[1:])} with 1 <= N <= {self.capacity} ({want}); "
                    "this server batches requests along the first dimension"
                    if shape[1:]
                    else f"input '{name}' has shape {_dims(value.shape)}, expected N with 1 <= N <= {self.capacity} ({want})"
                )
            rows[name] = int(value.shape[0])
        if self.batching and len(set(rows.values())) > 1:
            listing = ", ".join(f"{n} has {r}" for n, r in rows.items())
            raise InputError(f"inputs disagree on the batch size (first dimension): {listing}")
        return next(iter(rows.values())) if rows else 1

    def pack(self, requests: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
        """One call's inputs (rows of each request stacked, zero-padded to capacity) and the padded row count."""
        if not self.batching:
            return requests[0], 0
        packed, used = {}, 0
        for spec in self.inputs:
            name = spec["name"]
            buffer = np.zeros([int(d) for d in spec["shape"]], dtype=spec["dtype"])
            offset = 0
            for request in requests:
                rows = request[name].shape[0]
                buffer[offset : offset + rows] = request[name]
                offset += rows
            packed[name], used = buffer, offset
        return packed, self.capacity - used

    def group_key(self, arrays: dict[str, np.ndarray]):
        """A static build's requests all fit one call shape: any may join any batch."""
        return None

    def request_label(self, arrays: dict[str, np.ndarray]) -> str | None:
        """Static shapes are the manifest's: nothing per request worth a metrics label."""
        return None

    def results(self, outputs: dict[str, np.ndarray], requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return self.split(outputs, [next(iter(r.values())).shape[0] if self.batching else 1 for r in requests])

    def split(self, outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
        if not self.batching:
            return [outputs]
        results, offset = [], 0
        for count in rows:
            results.append({name: np.ascontiguousarray(value[offset : offset + count]) for name, value in outputs.items()})
            offset += count
        return results


@dataclass(eq=False)  # identity: deque.remove must not compare the requests' arrays
class _Item:
    arrays: dict
    rows: int
    future: asyncio.Future
    key: object = None  # layout.group_key: only items with equal keys share a call
    enqueued: float = field(default_factory=time.perf_counter)


class Overloaded(Exception):
    """The queue is full: the client should retry later (HTTP 503)."""


class Batcher:
    """Collects requests on the event loop and runs batches on worker threads.

    ``execute(batch_inputs) -> outputs`` runs in ``executor``; ``workers`` batches
    run at once at most.
    """

    def __init__(self, layout: Layout, execute, executor, workers: int, timeout_s: float, max_queue: int, metrics=None):
        self.layout = layout
        self.execute = execute
        self.executor = executor
        self.timeout_s = max(0.0, timeout_s)
        self.max_queue = max_queue
        self.metrics = metrics
        self.pending: collections.deque[_Item] = collections.deque()
        self.running = 0
        self._slots = asyncio.Semaphore(workers)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        return len(self.pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="autoglm-batcher")

    async def close(self) -> None:
        """Run what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            while (self.pending and not self._task.done()) or self.running:
                await asyncio.sleep(0.01)
            for item in self.pending:  # only if the loop died: fail them rather than hang
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the server stopped before this request ran"))
            self.pending.clear()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if len(self.pending) >= self.max_queue:
            raise Overloaded(f"server overloaded: {len(self.pending)} requests queued (--max-queue {self.max_queue}); retry later")
        item = _Item(arrays, rows, asyncio.get_running_loop().create_future(), self.layout.group_key(arrays))
        self.pending.append(item)
        self._wake.set()
        return await item.future

    async def _next_batch(self) -> list[_Item]:
        while not self.pending:
            self._wake.clear()
            await self._wake.wait()
        loop = asyncio.get_running_loop()
        first = self.pending.popleft()
        batch, rows = [first], first.rows
        capacity = self.layout.capacity or 1
        deadline = loop.time() + self.timeout_s
        while len(batch) < self.layout.max_requests and rows < capacity:
            item = next((waiting for waiting in self.pending if waiting.key == first.key), None)  # the oldest that can share the call
            if item is not None:
                if rows + item.rows > capacity:
                    break
                self.pending.remove(item)
                batch.append(item)
                rows += item.rows
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                self._slots.release()
                continue
            self.running += 1
            work = loop.run_in_executor(self.executor, self._run, [item.arrays for item in batch])
            work.add_done_callback(lambda done, batch=batch: self._finish(done, batch))

    def _run(self, requests: list[dict]) -> list[dict]:
        """Worker thread: pack, call the model, split."""
        start = time.perf_counter()
        inputs, padded = self.layout.pack(requests)
        outputs = self.execute(inputs)
        results = self.layout.results(outputs, requests)
        if self.metrics is not None:
            sent = sum(request[name].size for request in requests for name in inputs if name in request)
            called = sum(value.size for value in inputs.values())
            self.metrics.observe_batch(
                len(requests), padded, time.perf_counter() - start,
                request_labels=[self.layout.request_label(request) for request in requests],
                call_label=self.layout.request_label(inputs), input_elements=called, padded_elements=called - sent,
            )
        return results

    def _finish(self, done: asyncio.Future, batch: list[_Item]) -> None:
        self.running -= 1
        self._slots.release()
        error = RuntimeError("the model call was cancelled") if done.cancelled() else done.exception()
        for i, item in enumerate(batch):
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(done.result()[i])
