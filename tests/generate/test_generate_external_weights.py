"""A generator compiled with ``weights="external"``: decode (``main``) and ``prefill`` take one weight file.

Greedy tokens equal onnxruntime's (its own cache loop) and the embedded generator's; logits equal
the embedded build's bit for bit (same kernels, same weights); weights both functions use are
stored once; the lean runtime generates from the exported artifact in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lm_cases import MAX_CONTEXT, PREFILL_CHUNK

PROMPT = [17, 4, 301, 9, 250, 8, 1, 77, 5, 60, 12, 3, 99, 41, 7, 2, 33, 18, 6]  # 19 tokens: a prefill chunk of 16, then decode


@pytest.fixture(scope="module")
def external_generator(lm_onnx):
    import tvm_autoglm

    return tvm_autoglm.compile(lm_onnx("gpt-neox"), generate=True, max_context=MAX_CONTEXT, prefill_chunk=PREFILL_CHUNK,
                               weights="external")


def test_tokens_match_onnxruntime_and_the_embedded_generator(external_generator, generator, reference):
    want = reference("gpt-neox").generate(PROMPT, max_new_tokens=24).tolist()
    assert external_generator.generate(PROMPT, max_new_tokens=24).tolist() == want
    assert generator("gpt-neox").generate(PROMPT, max_new_tokens=24).tolist() == want
    ours = external_generator.generate(PROMPT, max_new_tokens=4, output_logits=True)
    embedded = generator("gpt-neox").generate(PROMPT, max_new_tokens=4, output_logits=True)
    np.testing.assert_array_equal(np.asarray(ours[1]), np.asarray(embedded[1]))


def test_prefill_and_decode_share_one_weight_file(external_generator):
    entry = external_generator.manifest["weights"]
    main, prefill = entry["functions"]["main"], entry["functions"]["prefill"]
    assert main and prefill
    shared = set(main) & set(prefill)
    assert shared, "no tensor shared between decode and prefill"
    assert entry["tensors"] == len(set(main) | set(prefill)) == len(external_generator._weights.tensors)
    # every tensor is distinct by content: a weight both functions take in the same layout is written once
    table = external_generator._weights.tensors
    digests = {name: (tuple(t.shape), str(t.dtype), t.numpy().tobytes()) for name, t in table.items()}
    assert len(set(digests.values())) == len(digests)


CHILD = r"""
import json, sys
sys.modules["torch"] = None
import tvm_autoglm.runtime
session = tvm_autoglm.runtime.load(sys.argv[1])
print(json.dumps({"greedy": session.generate(json.loads(sys.argv[2]), max_new_tokens=24).tolist()}))
"""


def test_exported_generator_runs_in_the_lean_runtime(external_generator, generator, reference, workdir):
    ext = external_generator.export(workdir / "gen-ext" / "neox.so")
    emb = generator("gpt-neox").export(workdir / "gen-emb" / "neox.so")
    entry = json.loads(ext.with_suffix(".json").read_text())["weights"]
    saved = emb.stat().st_size - ext.stat().st_size
    assert 0.9 * entry["bytes"] <= saved <= entry["bytes"] + 64 * 1024, (saved, entry["bytes"])
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ext), json.dumps(PROMPT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])["greedy"]
    assert got == reference("gpt-neox").generate(PROMPT, max_new_tokens=24).tolist()
