"""Prometheus text-format metrics, kept in-process without a client library.

The server needs a handful of counters, gauges and histograms; writing the
exposition format (version 0.0.4) directly keeps ``[serve]`` to two
dependencies. Observations come from the event loop and from worker threads,
so every update takes one lock.
"""

from __future__ import annotations

import math
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"' for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{_number(float(bound))}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_number(self.total)}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    """Everything /metrics reports. Gauges that mirror live state are read through callables at render time."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.padded_rows = 0
        #: dynamic builds: requests by their own symbolic dims, model calls by the dims they ran at
        self.request_shapes: dict[str, int] = {}
        self.call_shapes: dict[str, int] = {}
        self.input_elements = 0  # input elements passed to model calls
        self.padded_elements = 0  # of which padding (rows up to a static batch, lengths up to a bucket)
        self.gauges: dict[str, tuple[str, callable]] = {}

    def count_request(self, code: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[str(code)] = self.requests.get(str(code), 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def count_error(self, reason: str) -> None:
        with self._lock:
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def observe_batch(self, requests: int, padded_rows: int, seconds: float, *, request_labels=(), call_label: str | None = None,
                      input_elements: int = 0, padded_elements: int = 0) -> None:
        """One model call: ``requests`` packed, its padding, and (dynamic builds) the shapes served."""
        with self._lock:
            self.batch_size.observe(requests)
            self.inference.observe(seconds)
            self.padded_rows += padded_rows
            self.input_elements += input_elements
            self.padded_elements += padded_elements
            for label in request_labels:
                if label is not None:
                    self.request_shapes[label] = self.request_shapes.get(label, 0) + 1
            if call_label is not None:
                self.call_shapes[call_label] = self.call_shapes.get(call_label, 0) + 1

    @property
    def padding_fraction(self) -> float:
        """Share of the input elements given to model calls that were padding (0 before any call)."""
        return self.padded_elements / self.input_elements if self.input_elements else 0.0

    def gauge(self, name: str, help_text: str, read) -> None:
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP autoglm_requests_total Inference requests answered, by HTTP status code.",
                "# TYPE autoglm_requests_total counter",
            ]
            lines += [f"autoglm_requests_total{_labels({'code': code})} {n}" for code, n in sorted(self.requests.items())]
            lines += [
                "# HELP autoglm_request_errors_total Inference requests that failed, by reason.",
                "# TYPE autoglm_request_errors_total counter",
            ]
            lines += [f"autoglm_request_errors_total{_labels({'reason': r})} {n}" for r, n in sorted(self.errors.items())]
            lines += [
                "# HELP autoglm_request_latency_seconds Time from request received to response ready (inference endpoint).",
                "# TYPE autoglm_request_latency_seconds histogram",
                *self.latency.lines("autoglm_request_latency_seconds"),
                "# HELP autoglm_inference_seconds Time of one model call (one batch) in a worker.",
                "# TYPE autoglm_inference_seconds histogram",
                *self.inference.lines("autoglm_inference_seconds"),
                "# HELP autoglm_batch_size Requests packed into one model call.",
                "# TYPE autoglm_batch_size histogram",
                *self.batch_size.lines("autoglm_batch_size"),
                "# HELP autoglm_padded_rows_total Rows of zero padding added to fill the build's batch dimension.",
                "# TYPE autoglm_padded_rows_total counter",
                f"autoglm_padded_rows_total {self.padded_rows}",
                "# HELP autoglm_request_shapes_total Requests by the symbolic dims they were sent with (dynamic builds).",
                "# TYPE autoglm_request_shapes_total counter",
                *(f"autoglm_request_shapes_total{_labels({'dims': d})} {n}" for d, n in sorted(self.request_shapes.items())),
                "# HELP autoglm_call_shapes_total Model calls by the symbolic dims they ran at, after bucketing and stacking (dynamic builds).",
                "# TYPE autoglm_call_shapes_total counter",
                *(f"autoglm_call_shapes_total{_labels({'dims': d})} {n}" for d, n in sorted(self.call_shapes.items())),
                "# HELP autoglm_input_elements_total Input elements passed to model calls, padding included.",
                "# TYPE autoglm_input_elements_total counter",
                f"autoglm_input_elements_total {self.input_elements}",
                "# HELP autoglm_padded_elements_total Input elements that were padding (batch rows, bucketed lengths).",
                "# TYPE autoglm_padded_elements_total counter",
                f"autoglm_padded_elements_total {self.padded_elements}",
                "# HELP autoglm_padding_fraction Share of input elements passed to model calls that were padding.",
                "# TYPE autoglm_padding_fraction gauge",
                f"autoglm_padding_fraction {_number(self.padding_fraction)}",
            ]
        for name, (help_text, read) in self.gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(float(read()))}"]
        return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from exposition text: for tests and the benchmark."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values
