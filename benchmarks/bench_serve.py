"""Serving throughput and latency: dynamic batching vs one request per call, over loopback HTTP.

    .venv/bin/python benchmarks/bench_serve.py                      # defaults below
    .venv/bin/python benchmarks/bench_serve.py --requests 3000 --rounds 5 --concurrency 64

Builds a row-wise MLP (x[B,F] -> relu(x W1 + b1) W2 + b2) for batch 1 and for
batch B, then serves it three ways and drives each with the same closed-loop
load (C keep-alive connections, each sending its next request when the last
answer arrives, distinct random rows per request):

  1. batch-1 build, no batching          (the natural unbatched server)
  2. batch-B build, --max-batch 1         (same build as 3, one request per call, padded)
  3. batch-B build, --max-batch B         (dynamic batching)

All three servers stay up and the measurement rounds interleave them, so load
from other work on a shared machine hits each configuration alike. The load
generator is a raw-asyncio HTTP/1.1 client in this process, so it shares the
machine's cores with the server: numbers are for the whole box. This is a load
test of the HTTP server (request latency under concurrency), not a race of
runtimes, so it keeps its own client-side clock; the onnxruntime session that
checks the answers comes from measure.harness like every other.
Writes a markdown table to --output (default benchmarks/results/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def mlp(batch: int, features: int, hidden: int, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    init = [
        numpy_helper.from_array((rng.standard_normal((features, hidden)) / np.sqrt(features)).astype("float32"), "w1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype("float32"), "b1"),
        numpy_helper.from_array((rng.standard_normal((hidden, features)) / np.sqrt(hidden)).astype("float32"), "w2"),
        numpy_helper.from_array(rng.standard_normal(features).astype("float32"), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "serve_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build(path: Path, batch: int, features: int, hidden: int) -> None:
    import tvm_autoglm

    tvm_autoglm.compile(mlp(batch, features, hidden), opt_level=3).export(path)


class Server:
    def __init__(self, *args, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tvm_autoglm", "serve", "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stderr: list[str] = []
        threading.Thread(target=lambda: [self.stderr.append(line) for line in self.proc.stderr], daemon=True).start()
        for line in self.proc.stdout:
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                threads = re.search(r"workers: (\d+ x \d+) TVM", line)
                self.threads = threads.group(1) if threads else "?"
                break
        else:
            raise SystemExit(f"server did not start:\n{''.join(self.stderr)}")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 300
        while asyncio.run(request(self.port, "GET", "/ready"))[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"server never became ready:\n{''.join(self.stderr)}")
            time.sleep(0.2)

    def metrics(self) -> dict[str, float]:
        from tvm_autoglm.serve.metrics import parse

        return parse(asyncio.run(request(self.port, "GET", "/metrics"))[1].decode())

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=120)


async def _read_response(reader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


def _request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, b""
    writer.write(_request_bytes(method, path, body))
    await writer.drain()
    result = await _read_response(reader)
    writer.close()
    return result


async def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[list[float], float, list[tuple[int, bytes]]]:
    """Closed loop: `concurrency` keep-alive connections share the list of requests."""
    latencies = [0.0] * len(bodies)
    answers: list = [None] * len(bodies)
    cursor = iter(range(len(bodies)))

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in cursor:
            start = time.perf_counter()
            writer.write(_request_bytes("POST", "/v1/infer", bodies[i]))
            await writer.drain()
            answers[i] = await _read_response(reader)
            latencies[i] = time.perf_counter() - start
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start, answers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="batch dimension of the batched build (default 16)")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=1500, help="requests per configuration and round (default 1500)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; throughput is the median round (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument("--tvm-threads", type=int, default=None, help="passed to auto-glm serve --tvm-threads (default: the server's default)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serving.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    b1, bn = work / "mlp_b1.so", work / f"mlp_b{args.batch}.so"
    print(f"building {b1.name} and {bn.name} ...", flush=True)
    build(b1, 1, args.features, args.hidden)
    build(bn, args.batch, args.features, args.hidden)

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.requests, 1, args.features)).astype("float32")
    bodies = [json.dumps({"inputs": {"x": row.tolist()}}).encode() for row in rows]
    reference = mlp(1, args.features, args.hidden)
    from tvm_autoglm.measure import harness

    # the parity reference only (answers are checked against it): one thread, the servers own the cores
    ort_reference = harness.ort_runner(reference.SerializeToString(), threads=1)

    configs = [
        ("batch-1 build, no batching", b1, []),
        (f"batch-{args.batch} build, --max-batch 1", bn, ["--max-batch", 1]),
        (f"batch-{args.batch} build, --max-batch {args.batch}", bn, ["--max-batch", args.batch, "--batch-timeout-ms", args.batch_timeout_ms]),
    ]
    # All three servers run at once and the rounds interleave them, so drifting load on a shared
    # machine hits every configuration alike; each server idles while another is measured.
    servers = []
    try:
        for label, artifact, flags in configs:
            print(f"starting: {label}", flush=True)
            servers.append(Server("--binary", artifact, *flags, *(["--tvm-threads", args.tvm_threads] if args.tvm_threads else [])))
        for server in servers:
            asyncio.run(load(server.port, bodies[: min(200, len(bodies))], args.concurrency))  # warm the HTTP path
        stats = [{"latencies": [], "throughputs": [], "errors": 0, "calls": 0.0, "requests_in_calls": 0.0, "infer_s": 0.0} for _ in configs]
        for round_index in range(args.rounds):
            for (label, _, _), server, stat in zip(configs, servers, stats):
                before = server.metrics()
                latencies, wall, answers = asyncio.run(load(server.port, bodies, args.concurrency))
                after = server.metrics()
                stat["latencies"] += latencies
                stat["throughputs"].append(len(bodies) / wall)
                stat["errors"] += sum(1 for status, _ in answers if status != 200)
                stat["calls"] += after["autoglm_batch_size_count"] - before["autoglm_batch_size_count"]
                stat["requests_in_calls"] += after["autoglm_batch_size_sum"] - before["autoglm_batch_size_sum"]
                stat["infer_s"] += after["autoglm_inference_seconds_sum"] - before["autoglm_inference_seconds_sum"]
                for i in range(0, len(bodies), max(1, len(bodies) // 50)):  # answers belong to their own requests
                    got = np.asarray(json.loads(answers[i][1])["outputs"]["y"], dtype="float32")
                    np.testing.assert_allclose(got, ort_reference({"x": rows[i]})[0], rtol=1e-4, atol=1e-4)
                print(f"round {round_index + 1}: {label}: {len(bodies) / wall:.0f} req/s", flush=True)
    finally:
        codes = [server.stop() for server in servers]
    results = []
    for (label, _, _), server, stat, code in zip(configs, servers, stats, codes):
        results.append(
            {
                "label": label,
                "throughput": statistics.median(stat["throughputs"]),
                "throughput_range": (min(stat["throughputs"]), max(stat["throughputs"])),
                "p50_ms": 1000 * statistics.median(stat["latencies"]),
                "p99_ms": 1000 * percentile(stat["latencies"], 0.99),
                "mean_batch": stat["requests_in_calls"] / stat["calls"] if stat["calls"] else float("nan"),
                "infer_ms": 1000 * stat["infer_s"] / stat["calls"] if stat["calls"] else float("nan"),
                "errors": stat["errors"],
                "exit": code,
                "threads": server.threads,
            }
        )
        print(json.dumps(results[-1]), flush=True)

    base = results[1]["throughput"]
    command = "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
    lines = [
        "## Serving",
        "",
        f"`{command.strip()}` on {platform.machine()} ({os.cpu_count()} cores, client and server on the same machine), "
        f"{time.strftime('%Y-%m-%d')}. Model: row-wise MLP {args.features}->{args.hidden}->{args.features} (fp32, untuned CPU schedules), "
        f"{args.rounds} interleaved rounds of {args.requests} JSON requests of one row each per configuration, {args.concurrency} concurrent "
        "keep-alive connections, closed loop; throughput is the median round (range in brackets), latencies pool all rounds. "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run (other work on the machine skews absolute numbers).",
        "",
        "| configuration | workers x TVM threads | throughput (req/s) [range] | p50 (ms) | p99 (ms) | mean requests per call | model call (ms) | errors | vs --max-batch 1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['threads']} | {r['throughput']:.0f} [{r['throughput_range'][0]:.0f}-{r['throughput_range'][1]:.0f}] | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.2f} | {r['infer_ms']:.2f} | {r['errors']} | {r['throughput'] / base:.2f}x |"
        )
    lines += [
        "",
        "Every answer's status is counted in errors; 50 answers per configuration and round are checked against onnxruntime on their own request's row.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0 if all(r["errors"] == 0 and r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
