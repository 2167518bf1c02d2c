"""Request bodies to arrays and arrays to response bodies.

JSON carries no dtypes, so values are converted to the manifest's dtype here,
refusing lossy conversions (1.5 into an int64 input, 300 into uint8) instead
of letting numpy truncate silently. ``.npz`` bodies are typed: their dtypes
must match exactly (checked by the batch layout with the shapes).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..errors import InputError
from ..runtime.inputs import drop_frozen_inputs

NPZ = "application/x-npz"
JSON = "application/json"


def wants_npz(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == NPZ


def _check_names(given, specs: list[dict]) -> None:
    expected = [s["name"] for s in specs]
    unknown = [name for name in given if name not in expected]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {expected}")
    missing = [name for name in expected if name not in given]
    if missing:
        raise InputError(f"missing input(s) {missing}; the model's inputs are {expected}")


def _first_non_number(value) -> str:
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[:0] = item
        elif not isinstance(item, (bool, int, float)) or (isinstance(item, int) and not -(2**63) <= item < 2**64):
            return json.dumps(item)[:40]
    return "?"


def to_array(name: str, value, dtype: str) -> np.ndarray:
    """A nested JSON list as ``dtype``, or an InputError naming what is wrong with it."""
    target = np.dtype(dtype)
    try:
        raw = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"input '{name}' is not a rectangular nested list of numbers (rows of different lengths?)") from None
    if raw.dtype == object or raw.dtype.kind not in "biuf":
        raise InputError(f"input '{name}' holds a value that is not a number or is too large ({_first_non_number(value)}); expected {target} numbers")
    if target.kind in "iu":
        if raw.dtype.kind == "f":
            if raw.size and (not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw))):
                raise InputError(f"input '{name}' expects integers ({target}); got non-integer numbers")
        if raw.size and raw.dtype.kind != "b":
            info = np.iinfo(target)
            low, high = raw.min(), raw.max()
            if low < info.min or high > info.max:
                raise InputError(f"input '{name}' has values outside the {target} range [{info.min}, {info.max}] (min {low}, max {high})")
    elif target.kind == "b":
        if raw.dtype.kind != "b" and raw.size and not np.all((raw == 0) | (raw == 1)):
            raise InputError(f"input '{name}' expects booleans (true/false or 0/1)")
    return raw.astype(target)


def decode_json(body: bytes, specs: list[dict], frozen: list[dict] | None = None) -> dict[str, np.ndarray]:
    """``{"inputs": {name: nested list}}`` or a bare ``{name: nested list}``."""
    if not body.strip():
        raise InputError('empty request body; send {"inputs": {name: nested list}} as JSON or an .npz keyed by input name')
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise InputError(f'request body must be a JSON object {{"inputs": {{name: nested list}}}}, got a JSON {type(payload).__name__}')
    names = [s["name"] for s in specs]
    if "inputs" in payload and "inputs" not in names:
        extra = sorted(k for k in payload if k != "inputs")
        if extra:
            raise InputError(f'unexpected top-level key(s) {extra} beside "inputs"; put every input under "inputs"')
        payload = payload["inputs"]
        if not isinstance(payload, dict):
            raise InputError('"inputs" must be a JSON object mapping input names to nested lists')
    payload = drop_frozen_inputs(payload, frozen)
    _check_names(payload, specs)
    return {spec["name"]: to_array(spec["name"], payload[spec["name"]], spec["dtype"]) for spec in specs}


def decode_npz(body: bytes, specs: list[dict], frozen: list[dict] | None = None) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise InputError(f"request body is not a readable .npz file: {err}") from None
    arrays = drop_frozen_inputs(arrays, frozen)
    _check_names(arrays, specs)
    return arrays


def decode(body: bytes, content_type: str | None, specs: list[dict], frozen: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Anything that is not declared ``application/x-npz`` is read as JSON (curl's default form type included).

    ``frozen``: the manifest's ``frozen_inputs``, accepted only with their frozen value and dropped.
    """
    if wants_npz(content_type):
        return decode_npz(body, specs, frozen)
    return decode_json(body, specs, frozen)


def encode_json(outputs: dict[str, np.ndarray]) -> bytes:
    """float32 values go through Python floats, which hold them exactly: parsing back as float32 is lossless."""
    return json.dumps({"outputs": {name: value.tolist() for name, value in outputs.items()}}, allow_nan=True).encode()


def encode_npz(outputs: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **outputs)
    return buffer.getvalue()


def accepts_npz(accept: str | None) -> bool:
    return bool(accept) and any(part.split(";")[0].strip().lower() == NPZ for part in accept.split(","))
