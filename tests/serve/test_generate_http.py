"""`auto-glm serve` of a generator: POST /v1/generate, plain JSON and server-sent events, against onnxruntime's loop."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("uvicorn", reason="auto-glm serve needs the [serve] extra")
pytest.importorskip("starlette", reason="auto-glm serve needs the [serve] extra")

from server_proc import ServerProcess, http  # noqa: E402

PROMPT = [5, 17, 230, 4]


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory):
    import tvm_autoglm
    from tvm_autoglm.generate.reference import OrtStepper
    from tvm_autoglm.zoo import causal_lm

    folder = tmp_path_factory.mktemp("serve_generate")
    onnx_path = causal_lm.export("gpt2", "tiny", folder / "gpt2.onnx")
    tvm_autoglm.compile(onnx_path, generate=True, max_context=40, prefill_chunk=8).export(folder / "gpt2.so")
    server = ServerProcess("--binary", folder / "gpt2.so")
    try:
        server.wait_ready()
        yield server, OrtStepper(onnx_path)
    finally:
        server.kill()


def _post(port, payload):
    return http(port, "POST", "/v1/generate", json.dumps(payload).encode(), {"Content-Type": "application/json"})


def test_generate_json_and_sse_match_onnxruntime(lm_server):
    server, reference = lm_server
    want = reference.generate(PROMPT, max_new_tokens=12).tolist()
    status, _, body = _post(server.port, {"prompt_ids": PROMPT, "max_new_tokens": 12})
    assert status == 200 and json.loads(body)["tokens"] == want
    status, headers, body = _post(server.port, {"prompt_ids": PROMPT, "max_new_tokens": 12, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in body.decode().splitlines() if line.startswith("data: ")]
    assert [e["token"] for e in events[:-1]] == want
    assert events[-1] == {"done": True, "tokens": want}
    sampled = reference.generate(PROMPT, max_new_tokens=8, do_sample=True, top_p=0.9, seed=4).tolist()
    status, _, body = _post(server.port, {"prompt_ids": PROMPT, "max_new_tokens": 8, "do_sample": True, "top_p": 0.9, "seed": 4})
    assert json.loads(body)["tokens"] == sampled


@pytest.mark.parametrize("payload,needle", [
    ({"prompt_ids": list(range(41))}, "prompt has 41 tokens but the generator's max context is 40"),
    ({"prompt_ids": [1, 5000]}, "prompt token ids must be in [0, 1000)"),
    ({"prompt_ids": [1], "beams": 4}, "unknown field(s) ['beams']"),
    ({"max_new_tokens": 3}, "with 'prompt_ids'"),
    ({"prompt_ids": [1], "stream": True, "top_p": 0.0}, "top_p must be in (0, 1]"),
])
def test_bad_generate_requests_are_400_and_the_server_keeps_serving(lm_server, payload, needle):
    server, _ = lm_server
    status, _, body = _post(server.port, payload)
    assert status == 400, body
    assert needle in json.loads(body)["error"]
    assert server.proc.poll() is None
