"""How candidates are built and timed: MetaSchedule builder and runner (local or RPC) for a target.

Shared by every step that measures (baselines, search, verify). Workers ignore Ctrl-C:
it reaches the whole process group, and a worker killed mid-batch turns the batch being
measured into errors; the main process decides when to stop.
"""

from __future__ import annotations

from ..errors import AutoGLMError


def ignore_sigint() -> None:
    """Builder/runner worker initializer: Ctrl-C reaches the whole process group, and a worker
    killed mid-batch turns the batch being measured into errors; the main process decides."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def builder_worker_init() -> None:
    from .fastimport import preload_tensor_intrin

    ignore_sigint()
    preload_tensor_intrin()


def evaluator_for(spec):
    """How one candidate is timed on ``spec``'s device (the target-kind branch of measuring).

    CPU: each of 5 single runs after flushing every argument but the first (in a model a
    kernel's weights come cold from DRAM; timed back to back they would sit in L3). CUDA: a
    batch-1 kernel runs for microseconds, so each repeat averages 20 back-to-back launches.
    """
    from tvm.s_tir import meta_schedule as ms

    from ..backends import for_target

    backend = for_target(spec)
    return ms.runner.EvaluatorConfig(number=backend.measure_number, repeat=5, min_repeat_ms=0,
                                     enable_cpu_cache_flush=backend.flush_cpu_cache)


def make_builder(cores: int, timeout_s: float):
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(max_workers=cores, timeout_sec=timeout_s, initializer=builder_worker_init)


def make_runner(spec, rpc_tracker: str | None, rpc_key: str | None, timeout_s: float):
    """A LocalRunner, or an RPCRunner over the servers registered under ``rpc_key``."""
    from tvm.s_tir import meta_schedule as ms

    from ..runtime.session import default_thread_count

    # The runner's worker process must use the deployment's thread count (TVM's own default is half the CPUs).
    default_thread_count()
    evaluator = evaluator_for(spec)
    if rpc_tracker:
        runner, _ = rpc_runner(rpc_tracker, rpc_key, evaluator)
        return runner
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator, initializer=ignore_sigint)


def rpc_runner(tracker: str, key: str, evaluator):
    """(RPCRunner, worker count); refuses up front when the tracker or a server under ``key`` is missing."""
    from tvm.s_tir import meta_schedule as ms

    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AutoGLMError(f"--rpc-tracker must be HOST:PORT (got {tracker!r})")
    if not key:
        raise AutoGLMError("--rpc-tracker needs --rpc-key (the key the RPC servers registered with)")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key, session_timeout_sec=60)
    try:
        from tvm import rpc

        summary = rpc.connect_tracker(host, int(port)).summary()
    except Exception as err:  # noqa: BLE001
        raise AutoGLMError(f"cannot reach the RPC tracker at {tracker}: {err}") from None
    queue = summary.get("queue_info", {}).get(key, {})
    workers = int(queue.get("free", 0)) + int(queue.get("pending", 0))
    if workers < 1:
        keys = ", ".join(sorted(summary.get("queue_info", {}))) or "none"
        raise AutoGLMError(f"no RPC server is registered with the tracker at {tracker} under key {key!r} (keys: {keys})")
    return ms.runner.RPCRunner(config, evaluator_config=evaluator, max_workers=workers), workers
