"""Start ``auto-glm serve`` in a subprocess on a free loopback port and talk to it with urllib."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

STARTUP_TIMEOUT_S = 180


class ServerProcess:
    """``--port 0``: the server binds a free port itself and prints it, so there is no port race."""

    def __init__(self, *args, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tvm_autoglm", "serve", "--host", "127.0.0.1", "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout_lines: queue.Queue = queue.Queue()
        self.stderr_lines: list[str] = []
        self._drains = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines.put), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines.append), daemon=True),
        ]
        for thread in self._drains:
            thread.start()
        self.port = self._wait_for_port()

    @staticmethod
    def _drain(stream, sink):
        for line in stream:
            sink(line.rstrip("\n"))

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.stdout_lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode} before listening:\n{self.stderr()}")
                continue
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if match:
                return int(match.group(1))
        self.kill()
        raise AssertionError(f"server did not start within {STARTUP_TIMEOUT_S} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return "\n".join(self.stderr_lines[-50:])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if http(self.port, "GET", "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/ready never turned 200 within {timeout} s:\n{self.stderr()}")

    def metrics(self) -> dict[str, float]:
        from tvm_autoglm.serve.metrics import parse

        return parse(http(self.port, "GET", "/metrics")[2].decode())

    def wait(self, timeout: float = 60) -> int:
        """Exit status, once all of the process's output has been read."""
        code = self.proc.wait(timeout=timeout)
        for thread in self._drains:
            thread.join(timeout=10)
        return code

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, body bytes); HTTP errors are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def post_json(port: int, payload, timeout: float = 60):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, raw = http(port, "POST", "/v1/infer", body, {"Content-Type": "application/json"}, timeout)
    return status, json.loads(raw)


def jsonable(inputs: dict) -> dict:
    return {name: value.tolist() for name, value in inputs.items()}
