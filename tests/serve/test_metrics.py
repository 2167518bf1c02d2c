"""The /metrics text is valid Prometheus exposition: cumulative buckets, +Inf equals count."""

from __future__ import annotations

from tvm_autoglm.serve.metrics import Metrics, parse


def test_histograms_are_cumulative_and_counters_are_labelled():
    metrics = Metrics()
    for seconds in (0.0004, 0.003, 0.003, 7.0):
        metrics.count_request(200, seconds)
    metrics.count_request(400, 0.0001)
    metrics.count_error("bad_request")
    metrics.observe_batch(requests=3, padded_rows=5, seconds=0.001)
    metrics.gauge("autoglm_queue_depth", "Requests waiting.", lambda: 4)
    text = metrics.render()
    values = parse(text)
    assert values['autoglm_requests_total{code="200"}'] == 4
    assert values['autoglm_requests_total{code="400"}'] == 1
    assert values['autoglm_request_errors_total{reason="bad_request"}'] == 1
    assert values['autoglm_request_latency_seconds_bucket{le="0.0005"}'] == 2
    assert values['autoglm_request_latency_seconds_bucket{le="0.005"}'] == 4
    assert values['autoglm_request_latency_seconds_bucket{le="5"}'] == 4
    assert values['autoglm_request_latency_seconds_bucket{le="+Inf"}'] == values["autoglm_request_latency_seconds_count"] == 5
    assert values['autoglm_batch_size_bucket{le="2"}'] == 0 and values['autoglm_batch_size_bucket{le="4"}'] == 1
    assert values["autoglm_padded_rows_total"] == 5
    assert values["autoglm_queue_depth"] == 4
    assert "# TYPE autoglm_request_latency_seconds histogram" in text
