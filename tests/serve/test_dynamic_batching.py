"""Batching on dynamic artifacts without HTTP or a compiled model: which requests share a call,
padding to length buckets (only with a mask statement), slicing back, and every start-up refusal.

The "model" is a numpy function that honours the mask the way an encoder does (padded positions
contribute nothing), so a response must equal that function run on the request alone: exactly
(the function is elementwise and integer sums; no tolerance needed).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tvm_autoglm.errors import ArtifactError, InputError
from tvm_autoglm.serve.batching import Batcher, Layout
from tvm_autoglm.serve.dynamic_layout import DynamicLayout
from tvm_autoglm.serve.metrics import Metrics, parse


def encoder_manifest(batch="batch", outputs=None, seq_max=40):
    """input_ids/attention_mask [batch, seq]; hidden [batch, seq, 3]; pooled [batch, 1]."""
    return {
        "inputs": [
            {"name": "input_ids", "shape": [batch, "seq"], "dtype": "int64"},
            {"name": "attention_mask", "shape": [batch, "seq"], "dtype": "int64"},
        ],
        "outputs": outputs
        or [{"name": "hidden", "shape": [batch, "seq", 3], "dtype": "int64"}, {"name": "pooled", "shape": [batch, 1], "dtype": "int64"}],
        "symbolic_dims": {"seq": {"min": 1, "max": seq_max}, **({"batch": {"min": 1, "max": 4}} if isinstance(batch, str) else {})},
    }


def encoder(inputs):
    """Masked positions are ignored: hidden is ids*mask per position, pooled the masked sum per row."""
    kept = inputs["input_ids"] * inputs["attention_mask"]
    return {"hidden": np.repeat(kept[:, :, None], 3, axis=2) * np.array([1, 2, 3]), "pooled": kept.sum(axis=1, keepdims=True)}


def request(rows, seq, seed):
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, seq), np.int64)
    mask[:, seq - seq // 4 :] = 0  # the request's own padding, which must stay as sent
    return {"input_ids": rng.integers(1, 100, (rows, seq)).astype(np.int64), "attention_mask": mask}


def serve_all(layout, requests, timeout_s=0.05):
    """Submit every request at once; return (results, the inputs of each model call, metrics)."""
    calls, metrics = [], Metrics()

    def execute(inputs):
        calls.append({k: v.copy() for k, v in inputs.items()})
        return encoder(inputs)

    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(layout, execute, executor, workers=1, timeout_s=timeout_s, max_queue=100, metrics=metrics)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(r, layout.rows_of(r)) for r in requests))
        await batcher.close()
        executor.shutdown()
        return results

    return asyncio.run(main()), calls, metrics


def assert_each_equals_alone(requests, results):
    for sent, got in zip(requests, results):
        alone = encoder(sent)
        assert set(got) == set(alone)
        for name in alone:
            assert got[name].shape == alone[name].shape, name
            np.testing.assert_array_equal(got[name], alone[name], err_msg=name)


def test_equal_shapes_stack_along_the_symbolic_batch_and_others_never_share_a_call():
    layout = Layout.from_manifest(encoder_manifest(), 4)
    assert isinstance(layout, DynamicLayout) and layout.capacity == 4
    shapes = [(1, 9), (1, 9), (2, 9), (1, 5), (1, 9), (1, 5), (3, 7)]
    requests = [request(rows, seq, seed) for seed, (rows, seq) in enumerate(shapes)]
    results, calls, metrics = serve_all(layout, requests)
    assert_each_equals_alone(requests, results)
    # every request was queued before the first call: the oldest request's equal-shape peers join it (up to 4
    # rows), one 1x9 is left for a call of its own; the two 1x5 share one; no length is ever padded
    assert [c["input_ids"].shape for c in calls] == [(4, 9), (2, 5), (1, 9), (3, 7)]
    values = parse(metrics.render())
    assert values['autoglm_request_shapes_total{dims="batch=1,seq=9"}'] == 3
    assert values['autoglm_request_shapes_total{dims="batch=2,seq=9"}'] == 1
    assert values["autoglm_padded_elements_total"] == 0 and values["autoglm_padding_fraction"] == 0


def test_without_max_batch_each_request_runs_alone_at_its_own_shape():
    layout = Layout.from_manifest(encoder_manifest(), None)
    requests = [request(1, 9, 0), request(1, 9, 1), request(2, 3, 2)]
    results, calls, _ = serve_all(layout, requests)
    assert_each_equals_alone(requests, results)
    assert [c["input_ids"].shape for c in calls] == [(1, 9), (1, 9), (2, 3)]


def test_length_buckets_pad_with_a_zero_mask_and_slice_each_response_back():
    layout = Layout.from_manifest(encoder_manifest(), 4, {"seq": 16}, {"seq": "attention_mask"})
    shapes = [(1, 3), (1, 16), (2, 9), (1, 17), (1, 40), (1, 33)]
    requests = [request(rows, seq, 10 + seed) for seed, (rows, seq) in enumerate(shapes)]
    results, calls, metrics = serve_all(layout, requests)
    assert_each_equals_alone(requests, results)
    lengths = sorted((c["input_ids"].shape[1], c["input_ids"].shape[0]) for c in calls)
    assert lengths == [(16, 4), (32, 1), (40, 2)]  # 3,16,9 -> 16 (4 rows); 17 -> 32; 40 and 33 -> 40 (48 is past the max)
    for call in calls:
        ids, mask = call["input_ids"], call["attention_mask"]
        assert not mask[ids == 0].any()  # every padded position is masked
    sent = sum(2 * rows * seq for rows, seq in shapes)
    called = sum(2 * c["input_ids"].size for c in calls)
    values = parse(metrics.render())
    assert values["autoglm_padded_elements_total"] == called - sent == 2 * (4 * 16 - 3 - 16 - 18 + 32 - 17 + 80 - 73)
    assert values["autoglm_padding_fraction"] == pytest.approx((called - sent) / called)
    assert values['autoglm_call_shapes_total{dims="batch=4,seq=16"}'] == 1
    assert values['autoglm_request_shapes_total{dims="batch=1,seq=33"}'] == 1


def test_a_bucket_without_max_batch_pads_each_request_alone():
    """No --max-batch: no stacking, but each call still runs at its bucket's length (e.g. a --specialize size)."""
    layout = Layout.from_manifest(encoder_manifest(), None, {"seq": 8}, {"seq": "attention_mask"})
    requests = [request(1, 5, 0), request(2, 8, 1), request(1, 9, 2)]
    results, calls, _ = serve_all(layout, requests)
    assert_each_equals_alone(requests, results)
    assert [c["input_ids"].shape for c in calls] == [(1, 8), (2, 8), (1, 16)]


def test_static_batch_dim_pads_rows_and_buckets_the_symbolic_length():
    layout = Layout.from_manifest(encoder_manifest(batch=4), 3, {"seq": 8}, {"seq": "attention_mask"})
    assert layout.capacity == 4
    requests = [request(1, 5, 0), request(2, 7, 1), request(1, 11, 2)]
    results, calls, metrics = serve_all(layout, requests)
    assert_each_equals_alone(requests, results)
    assert sorted(c["input_ids"].shape for c in calls) == [(4, 8), (4, 16)]
    with pytest.raises(InputError, match=r"input 'input_ids' dim 0 \('rows'\) is 5, outside the compiled range 1..4"):
        layout.rows_of(request(5, 4, 0))


def test_a_request_out_of_range_is_refused_in_one_line():
    layout = Layout.from_manifest(encoder_manifest(), 4, {"seq": 16}, {"seq": "attention_mask"})
    with pytest.raises(InputError, match=r"^input 'input_ids' dim 1 \('seq'\) is 41, outside the compiled range 1..40$"):
        layout.rows_of(request(1, 41, 0))


@pytest.mark.parametrize(
    "max_batch, buckets, masks, needle",
    [
        (None, {"seq": 16}, {}, "--length-bucket seq=16 pads requests along 'seq', which is only sound if the model ignores the padding: name the input that masks it with --padding-mask seq=MASK_INPUT"),
        (None, {"seq": 16}, {"seq": "mask"}, "--padding-mask seq=mask: the model has no input 'mask'; its inputs are ['attention_mask', 'input_ids']"),
        (None, {}, {"seq": "attention_mask"}, "--padding-mask seq=attention_mask without --length-bucket seq=GRANULARITY"),
        (None, {"sequence": 16}, {"sequence": "attention_mask"}, "--length-bucket sequence: 'sequence' is not a symbolic dim of this build; its symbolic dims are ['batch', 'seq']"),
        (4, {"batch": 2}, {"batch": "attention_mask"}, "'batch' is the batch dim, which grows by stacking requests"),
        (8, {}, {}, "--max-batch 8 exceeds the maximum 4 of its batch dim 'batch'"),
    ],
)
def test_bucket_and_batch_statements_are_checked_at_start_up(max_batch, buckets, masks, needle):
    with pytest.raises(ArtifactError) as err:
        Layout.from_manifest(encoder_manifest(), max_batch, buckets, masks)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_mask_input_without_the_dim_is_refused():
    manifest = encoder_manifest()
    manifest["inputs"].append({"name": "token_type", "shape": ["batch", 2], "dtype": "int64"})
    with pytest.raises(ArtifactError, match=r"input 'token_type' has shape \['batch', 2\], without the dim 'seq'"):
        Layout.from_manifest(manifest, None, {"seq": 16}, {"seq": "token_type"})


def test_output_that_depends_on_the_length_other_than_as_a_dim_is_refused():
    outputs = [{"name": "pairs", "shape": ["batch", "seq * 2"], "dtype": "int64"}]
    with pytest.raises(ArtifactError, match=r"output 'pairs' dim 1 is 'seq \* 2', which depends on 'seq' in a way the server cannot slice back"):
        Layout.from_manifest(encoder_manifest(outputs=outputs), None, {"seq": 16}, {"seq": "attention_mask"})
    Layout.from_manifest(encoder_manifest(outputs=outputs), 2)  # no bucket: nothing to slice, served as before


def test_batch_symbol_must_lead_every_input_and_output_alone():
    mixed = encoder_manifest()
    mixed["inputs"].append({"name": "scale", "shape": [1], "dtype": "float32"})
    with pytest.raises(ArtifactError, match=r"one batch dim in every input and output; found .*input 'scale': 1"):
        Layout.from_manifest(mixed, 2)
    square = encoder_manifest(outputs=[{"name": "gram", "shape": ["batch", "batch"], "dtype": "int64"}])
    with pytest.raises(ArtifactError, match=r"batch dim 'batch' also sizes output 'gram' dim 1"):
        Layout.from_manifest(square, 2)


def test_buckets_on_a_static_build_are_refused():
    static = {"inputs": [{"name": "x", "shape": [1, 8], "dtype": "float32"}], "outputs": [{"name": "y", "shape": [1, 8], "dtype": "float32"}]}
    with pytest.raises(ArtifactError, match=r"'seq' is not a symbolic dim of this build; its symbolic dims are none \(a static build"):
        Layout.from_manifest(static, None, {"seq": 16}, {"seq": "x"})


def test_flag_values_parse_and_bad_ones_are_refused_in_one_line():
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.serve.padding import parse_length_buckets, parse_padding_masks

    assert parse_length_buckets(["seq=16", "height=8"]) == {"seq": 16, "height": 8}
    assert parse_padding_masks(["seq=attention_mask"]) == {"seq": "attention_mask"}
    for item in ["seq", "seq=0", "seq=x", "=16"]:
        with pytest.raises(AutoGLMError, match=rf"^bad --length-bucket '{item}': expected DIM=GRANULARITY"):
            parse_length_buckets([item])
    for item in ["seq", "seq=", "seq:attention_mask"]:
        with pytest.raises(AutoGLMError, match=rf"^bad --padding-mask '{item}': expected DIM=MASK_INPUT"):
            parse_padding_masks([item])
