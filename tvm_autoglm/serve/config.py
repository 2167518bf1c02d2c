"""Settings of one ``auto-glm serve`` process."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    binary: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int | None = None  # None: no batching, exact manifest shapes
    batch_timeout_ms: float = 2.0
    workers: int = 1
    max_queue: int = 1024
    max_body_bytes: int = 64 << 20
    graceful_timeout_s: float = 30.0
    warmup_runs: int = 1
    access_log: bool = False
    tvm_threads: int | None = None  # TVM threads per worker; None: TVM_NUM_THREADS, else (cores - 1) // workers
    #: --length-bucket: {symbolic dim: granularity}; requests are padded up to a multiple along it (dynamic builds)
    length_buckets: dict[str, int] = field(default_factory=dict)
    #: --padding-mask: {symbolic dim: mask input}, the user's statement that the model ignores padding there
    padding_masks: dict[str, str] = field(default_factory=dict)
