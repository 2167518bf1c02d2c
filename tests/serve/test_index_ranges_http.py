"""`auto-glm serve` answers an out-of-vocabulary token id with a 400 naming it, and keeps serving.

Without the check the id reaches the compiled Gather (an unchecked load) and
reads out of bounds inside the worker, which can take the whole server down.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="auto-glm serve needs the [serve] extra")
pytest.importorskip("starlette", reason="auto-glm serve needs the [serve] extra")

from server_proc import ServerProcess, post_json  # noqa: E402

from helpers import ort_run, token_model  # noqa: E402

VOCAB = 50
SEQ = 8


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    import tvm_autoglm

    out = tmp_path_factory.mktemp("serve_tokens") / "tokens.so"
    tvm_autoglm.compile(token_model(seq=SEQ, vocab=VOCAB, static=True)).export(out)
    server = ServerProcess("--binary", out)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@pytest.mark.parametrize("bad, position", [(VOCAB, 2), (-VOCAB - 1, 7), (10**12, 0)])
def test_out_of_range_id_is_a_400_naming_it(token_server, bad, position):
    ids = [3] * SEQ
    ids[position] = bad
    status, body = post_json(token_server.port, {"inputs": {"input_ids": [ids]}})
    assert status == 400, body
    assert body["error"] == (
        f"input 'input_ids' has value {bad} at position [0, {position}], outside the valid range [-{VOCAB}, {VOCAB - 1}] "
        f"set by Gather on embedding (axis 0, {VOCAB} rows)"
    )


def test_valid_ids_after_refusals_match_onnxruntime(token_server):
    ids = np.array([[0, VOCAB - 1, -1, -VOCAB, 7, 8, 9, 10]], "int64")
    status, body = post_json(token_server.port, {"inputs": {"input_ids": ids.tolist()}})
    assert status == 200, body
    want = ort_run(token_model(seq=SEQ, vocab=VOCAB, static=True), {"input_ids": ids})["hidden"]
    np.testing.assert_allclose(np.asarray(body["outputs"]["hidden"], "float32"), want, rtol=1e-4, atol=1e-4)
    assert token_server.proc.poll() is None
