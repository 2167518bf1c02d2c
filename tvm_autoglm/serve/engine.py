"""The model side of the server: one loaded library, one VM per worker thread.

All workers share the loaded module (one copy of the weights); each gets its
own ``relax.VirtualMachine`` because a VM keeps per-call register state and is
not safe to call from two threads at once. TVM releases the GIL during calls,
so K workers run K model calls in parallel.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import numpy as np

from ..runtime.inputs import example_inputs

WARMUP_DELAY_ENV = "AUTOGLM_SERVE_WARMUP_DELAY_S"


class Engine:
    def __init__(self, library: Path, manifest: dict, workers: int = 1, warmup_runs: int = 1):
        self.library = Path(library)
        self.manifest = manifest
        self.workers = max(1, int(workers))
        self.warmup_runs = max(1, int(warmup_runs))
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        self.state = "loading"
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def load_and_warm(self) -> None:
        """Blocking (run it off the event loop): load the library, build the VMs, run each once.

        ``AUTOGLM_SERVE_WARMUP_DELAY_S`` stretches warm-up so tests can observe /ready before it turns true.
        """
        import tvm

        from ..native_log import quiet_native_stderr
        from ..runtime.session import Session, external_weights

        weights = external_weights(self.library, self.manifest)  # --weights external: one mapping for all workers
        with quiet_native_stderr():
            module = tvm.runtime.load_module(str(self.library))
        sessions = [Session(module, self.manifest, self.library, weights) for _ in range(self.workers)]
        self.state = "warming up"
        sample = example_inputs(self.manifest["inputs"], seed=0, index_ranges=self.manifest.get("index_ranges"), symbolic_dims=self.manifest.get("symbolic_dims"))
        for session in sessions:
            for _ in range(self.warmup_runs):
                session.run(sample)
        delay = float(os.environ.get(WARMUP_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        for session in sessions:
            self._pool.put(session)
        self.state = "ready"

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Worker thread: borrow a VM, run, give it back."""
        session = self._pool.get()
        try:
            return session.run(inputs)
        finally:
            self._pool.put(session)

    def generate(self, prompt, on_token=None, **kwargs) -> list[int]:
        """Worker thread: borrow a VM and run a whole generation on it (generator artifacts only).

        ``on_token(id)`` is called for each new token as soon as it is chosen (SSE streaming).
        """
        session = self._pool.get()
        try:
            tokens = []
            for token in session.generate(prompt, stream=True, **kwargs):
                tokens.append(int(token))
                if on_token is not None:
                    on_token(int(token))
            return tokens
        finally:
            self._pool.put(session)
