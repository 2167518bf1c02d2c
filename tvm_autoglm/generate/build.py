"""``compile --generate``: one artifact with a decode step and a prefill step over a preallocated KV cache.

Both functions come from the same ONNX model, imported twice with static shapes:

* ``main`` (decode): one token, past length ``max_context - 1``, so each cache concat
  yields exactly ``max_context`` slots; :mod:`.kv_rewrite` turns the concats into in-place
  writes into caller-owned caches of ``max_context`` slots at ``cache_position``. A decode
  step moves only the new token's keys/values (plus the [1, max_context] attention mask), and
  its attention (``passes/decode_attention``) reads slots ``0..cache_position`` of the caches in place.
* ``prefill``: ``prefill_chunk`` tokens (the prompt, right-padded) after a few dummy past
  slots that the mask hides (:func:`prefill_dummy_slots`: enough to make the key count a
  multiple of 16); attention runs over the prompt only and the new rows are written into
  the same caches at slot 0. A prompt longer than the chunk continues
  token by token through ``main``.

What it needs from the model (checked by :func:`.layout.detect`): the Hugging Face cache
layout, a ``position_ids`` input, and attention that depends on key order only through
the mask and positions (true of causal decoders that apply RoPE / position embeddings
before caching).
"""

from __future__ import annotations

from ..errors import AutoGLMError
from .kv_rewrite import POSITION_INPUT, rewrite_cache_concats
from .layout import PAST_PATTERN, PRESENT_PATTERN, CacheLayout, detect
from .last_logits import take_last_row

#: Prompt tokens one prefill call takes (clipped to max_context).
DEFAULT_PREFILL_CHUNK = 128
#: The largest max_context accepted (the cache is preallocated at this size).
MAX_CONTEXT_LIMIT = 32768


def decode_shapes(layout: CacheLayout, max_context: int) -> dict[str, list[int]]:
    shapes = {layout.input_ids: [1, 1], layout.attention_mask: [1, max_context], layout.position_ids: [1, 1]}
    shapes.update({name: [1, layout.kv_heads, max_context - 1, layout.head_dim] for name in layout.past_names()})
    return shapes


#: prefill's key count (dummy slots + chunk) is made a multiple of this: the widest fp32 vector (AVX-512)
KEY_ALIGNMENT = 16


def prefill_dummy_slots(chunk: int) -> int:
    """Masked past slots before prefill's chunk: at least one (an empty past does not import), and enough that
    ``slots + chunk`` is a multiple of :data:`KEY_ALIGNMENT`. The attention rule vectorizes Q.K^T over the keys
    only when their count is a whole number of vectors: with one slot, chunk 128 gave 129 keys and a scalar
    Q.K^T (pythia-160m prefill attention 90 of 240 ms)."""
    return KEY_ALIGNMENT - chunk % KEY_ALIGNMENT


def prefill_shapes(layout: CacheLayout, chunk: int) -> dict[str, list[int]]:
    slots = prefill_dummy_slots(chunk)
    shapes = {layout.input_ids: [1, chunk], layout.attention_mask: [1, slots + chunk], layout.position_ids: [1, chunk]}
    shapes.update({name: [1, layout.kv_heads, slots, layout.head_dim] for name in layout.past_names()})
    return shapes


def _cache_indices(proto, layout: CacheLayout) -> list[int]:
    from ..onnx_model import graph_inputs

    names = [spec.name for spec in graph_inputs(proto)]
    return [names.index(name) for name in layout.past_names()]


def _add_generation_functions(mod, cleaned, *, proto, layout: CacheLayout, max_context: int, chunk: int, source: str,
                              report: dict | None = None):
    """post_import hook: rewrite decode ``main``; import, rewrite and add ``prefill`` (what it did goes in ``report``)."""
    import tvm

    from ..pipeline import _clean, import_onnx

    report = {} if report is None else report
    mod = rewrite_cache_concats(mod, _cache_indices(cleaned, layout))
    if chunk:
        shapes = prefill_shapes(layout, chunk)
        prefill_proto = _clean(proto, shapes)
        prefill = import_onnx(prefill_proto, shapes, source)["main"].with_attr("global_symbol", "prefill")
        mod = tvm.IRModule({**{gv: f for gv, f in mod.functions.items()}, tvm.ir.GlobalVar("prefill"): prefill}, attrs=mod.attrs)
        mod = rewrite_cache_concats(mod, _cache_indices(prefill_proto, layout), func_name="prefill", cache_slots=max_context)
        outputs = [o.name for o in prefill_proto.graph.output]
        mod, why_all = take_last_row(mod, "prefill", outputs.index(layout.logits))
        report["prefill_logits"] = "all" if why_all else "last"
        if why_all:
            report["prefill_logits_why_all"] = why_all
    return mod


def check_max_context(max_context) -> int:
    value = int(max_context)
    if not 2 <= value <= MAX_CONTEXT_LIMIT:
        raise AutoGLMError(f"--max-context must be in [2, {MAX_CONTEXT_LIMIT}], got {max_context}")
    return value


def compile_generator_parts(model, target="cpu", opt_level: int = 3, tuning_db=None, *, max_context: int = 2048,
                            prefill_chunk: int | None = None, past_pattern: str = PAST_PATTERN,
                            present_pattern: str = PRESENT_PATTERN, disabled_passes: tuple[str, ...] = (),
                            use_shipped_schedules: bool = True, quantize: str = "none",
                            accuracy_budget: float | None = None, log=None, weights: str = "embedded"):
    """``pipeline.Compiled`` of a generator (through the one compile function, twice: the Relax build, whose
    inputs the generator then describes, and its codegen); the manifest's ``generator`` section says how to drive it.
    ``weights="external"``: ``main`` and ``prefill`` take the same weight file's tensors (shared by content)."""
    from functools import partial

    from ..backends import for_target
    from ..onnx_model import load_model
    from ..pipeline import compile_model
    from ..targets import TargetSpec, load_target

    max_context = check_max_context(max_context)
    chunk = DEFAULT_PREFILL_CHUNK if prefill_chunk is None else int(prefill_chunk)
    if chunk < 0:
        raise AutoGLMError(f"prefill chunk must be >= 0 (0 = token by token), got {prefill_chunk}")
    chunk = min(chunk, max_context)
    quantize = (quantize or "none").lower()
    if quantize not in ("none", "wint8"):
        raise AutoGLMError(f"--generate takes --quantize none or wint8 (weight-only int8 for decode), got {quantize}")
    if quantize == "none" and accuracy_budget is not None:
        raise AutoGLMError("--accuracy-budget applies to --quantize wint8 (or auto); this build is fp32")
    spec = target if isinstance(target, TargetSpec) else load_target(target)
    if not for_target(spec).builds_generators:
        raise AutoGLMError(f"--generate supports CPU targets only for now, got {spec.name}")
    proto, path = load_model(model)
    source = str(path) if path else "model"
    layout = detect(proto, source, past_pattern, present_pattern)
    report: dict = {}
    hook = partial(_add_generation_functions, proto=proto, layout=layout, max_context=max_context, chunk=chunk, source=source,
                   report=report)
    disabled = tuple(disabled_passes)
    if quantize != "none":
        from ..quantize import passes_off_for

        disabled += tuple(p for p in passes_off_for(quantize) if p not in disabled)
    build = compile_model(path or proto, spec, opt_level, decode_shapes(layout, max_context), tuning_db,
                          disabled_passes=disabled, post_import=hook, until="relax", log=log).build
    if quantize == "wint8":  # measured on the source ONNX (a prompt + its greedy continuation, empty cache): the decode-shaped build's cannot run one
        from ..quantize.wint8_build import apply_wint8, decoder_reference

        build = apply_wint8(build, accuracy_budget, reference=decoder_reference(proto, layout, max_context), log=log)
    build.inputs = decode_inputs(build.inputs, layout, max_context)
    done = compile_model(build, tuning_db=tuning_db, use_shipped_schedules=use_shipped_schedules, log=log, weights=weights)
    manifest = done.manifest
    check_position_table(manifest.get("index_ranges"), layout, max_context, source)
    # cache_position indexes the cache write: a value past the cache would write out of bounds, so
    # Session.run (a caller driving main by hand, serve's warm-up) range-checks it like a token id.
    manifest["index_ranges"] = {**(manifest.get("index_ranges") or {}),
                                POSITION_INPUT: {"min": 0, "max": max_context - 1, "source": f"KV cache of {max_context} slots"}}
    manifest["generator"] = {
        "max_context": max_context,
        "prefill_chunk": chunk,
        "prefill_dummy_slots": prefill_dummy_slots(chunk) if chunk else 0,
        "cache": layout.to_json(),
        "position_input": POSITION_INPUT,
        "functions": {"decode": "main", "prefill": "prefill" if chunk else None},
        # "last": prefill takes the prompt's last index (``prefill_last_index``) and returns that row's logits only
        **({k: v for k, v in report.items() if k.startswith("prefill_logits")}),
        "copied_per_decode_step": "new keys/values of one token per layer, the int64 [1, max_context] attention mask and the logits",
    }
    return done


def check_position_table(index_ranges: dict | None, layout: CacheLayout, max_context: int, source: str) -> None:
    """Refuse a cache longer than a learned position table (GPT-2: 2048 rows) that ``position_ids`` indexes."""
    positions = (index_ranges or {}).get(layout.position_ids)
    if positions and int(positions["max"]) + 1 < max_context:
        table = int(positions["max"]) + 1
        raise AutoGLMError(f"--max-context {max_context} exceeds the {table} positions of {source} ({positions.get('source', 'position table')})",
                           hint=f"use --max-context {table} or less")


def decode_inputs(inputs: list[dict], layout: CacheLayout, max_context: int) -> list[dict]:
    """``main``'s real signature after the rewrite: caches of max_context slots, then cache_position."""
    past = set(layout.past_names())
    fixed = []
    for spec in inputs:
        spec = dict(spec)
        if spec["name"] in past:
            spec["shape"] = [1, layout.kv_heads, max_context, layout.head_dim]
        fixed.append(spec)
    return fixed + [{"name": POSITION_INPUT, "shape": [1], "dtype": "int64"}]
