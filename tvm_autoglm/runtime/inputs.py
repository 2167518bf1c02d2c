"""Reading and checking model inputs against a manifest.

Errors name the input, the expected shape/dtype and what was given, because a
shape mismatch caught here is a one-line fix for the user while the same
mismatch inside the VM is an opaque TVM check failure.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError


def _spec_text(spec: dict) -> str:
    return f"{spec['dtype']}[{'x'.join(str(d) for d in spec['shape'])}]"


def validate_inputs(inputs: dict, specs: list[dict], index_ranges: dict | None = None, symbolic_dims: dict | None = None) -> list[np.ndarray]:
    """Check names, shapes, dtypes and (given the manifest's ``index_ranges``) index values; return arrays in manifest order.

    A dynamic build's specs name symbolic dims (``[1, "seq"]``); ``symbolic_dims`` (the manifest's
    ranges) then bounds them, and inputs sharing a symbol must agree on its value.
    """
    expected = [s["name"] for s in specs]
    unknown = [name for name in inputs if name not in expected]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {expected}")
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InputError(f"missing input(s) {missing}; the model's inputs are {expected}")
    if symbolic_dims or any(isinstance(d, str) for spec in specs for d in spec["shape"]):
        from .shapes import bind_shape, check_shapes

        given = {name: np.asarray(value) for name, value in inputs.items()}
        specs = [{**spec, "shape": list(bind_shape(spec["shape"], check_shapes(given, specs, symbolic_dims or {})))} for spec in specs]
    arrays = []
    for spec in specs:
        value = np.asarray(inputs[spec["name"]])
        want_shape = tuple(int(d) for d in spec["shape"])
        if value.dtype != np.dtype(spec["dtype"]):
            raise InputError(
                f"input '{spec['name']}' has dtype {value.dtype}, expected {spec['dtype']} (shape {_spec_text(spec)})"
            )
        if tuple(value.shape) != want_shape:
            got = "x".join(str(d) for d in value.shape) or "scalar"
            raise InputError(
                f"input '{spec['name']}' has shape {got}, expected {'x'.join(str(d) for d in want_shape)} ({spec['dtype']})"
            )
        # np.require, not np.ascontiguousarray: the latter turns a 0-d (scalar) input into shape (1,)
        arrays.append(np.require(value, requirements="C"))
    if index_ranges:
        check_index_ranges(dict(zip(expected, arrays)), index_ranges)
    return arrays


def check_index_ranges(inputs: dict, index_ranges: dict | None) -> None:
    """Refuse index inputs (token ids) outside the table they index.

    The compiled Gather is an unchecked load (TVM's ``take`` in "fast" mode), so
    an id past the vocabulary would read out of bounds or crash the process.
    One vectorized min/max per checked input; the position is searched only on failure.
    """
    for name, valid in (index_ranges or {}).items():
        value = inputs.get(name)
        if value is None:
            continue
        value = np.asarray(value)
        if value.size == 0 or value.dtype.kind not in "iu":
            continue
        low, high = int(valid["min"]), int(valid["max"])
        if int(value.min()) >= low and int(value.max()) <= high:
            continue
        flat = np.flatnonzero((value < low) | (value > high))[0]
        position = [int(i) for i in np.unravel_index(flat, value.shape)]
        source = f" set by {valid['source']}" if valid.get("source") else ""
        raise InputError(
            f"input '{name}' has value {int(value.flat[flat])} at position {position}, outside the valid range [{low}, {high}]{source}"
        )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is not a readable .npz file: {err}") from None


def read_bin(path: Path, specs: list[dict]) -> dict[str, np.ndarray]:
    """Raw little-endian tensors concatenated in manifest order."""
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    symbolic = sorted({d for spec in specs for d in spec["shape"] if isinstance(d, str)})
    if symbolic:
        raise InputError(f"{path}: a .bin input has no shapes, and this build's dims {symbolic} are symbolic; pass the inputs as .npz")
    raw = path.read_bytes()
    sizes = []
    for spec in specs:
        count = int(np.prod(spec["shape"], dtype=np.int64))
        sizes.append(count * np.dtype(spec["dtype"]).itemsize)
    if len(raw) != sum(sizes):
        layout = ", ".join(f"{s['name']}:{_spec_text(s)}" for s in specs)
        raise InputError(f"{path} has {len(raw)} bytes, expected {sum(sizes)} for inputs in manifest order ({layout})")
    result, offset = {}, 0
    for spec, size in zip(specs, sizes):
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        array = np.frombuffer(raw, dtype=dtype, count=size // dtype.itemsize, offset=offset)
        result[spec["name"]] = array.astype(np.dtype(spec["dtype"])).reshape(spec["shape"])
        offset += size
    return result


def write_bin(path: Path, inputs: dict, specs: list[dict]) -> None:
    from .manifest import write_bytes_atomic

    arrays = validate_inputs(inputs, specs)
    write_bytes_atomic(path, b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays))


def read_inputs(path: str | Path, specs: list[dict]) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix == ".bin":
        return read_bin(path, specs)
    raise InputError(f"input file {path} must be .npz (keyed by input name) or .bin (raw, manifest order)")


#: A dynamic build's example inputs give each symbolic dim this size, clamped into its range.
EXAMPLE_SYMBOL_SIZE = 128


def example_inputs(specs: list[dict], seed: int = 0, index_ranges: dict | None = None, symbolic_dims: dict | None = None) -> dict[str, np.ndarray]:
    """Plausible inputs from specs alone: masks of ones, small token ids (below the table size, given ``index_ranges``), N(0,1) floats.

    Symbolic dims (dynamic builds) take ``EXAMPLE_SYMBOL_SIZE`` clamped into ``symbolic_dims``' range.
    """
    rng = np.random.default_rng(seed)
    sizes = {name: min(int(r["max"]), max(int(r["min"]), EXAMPLE_SYMBOL_SIZE)) for name, r in (symbolic_dims or {}).items()}
    result = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec["shape"])
        if dtype.kind in "iu":
            if "mask" in spec["name"].lower():
                result[spec["name"]] = np.ones(shape, dtype=dtype)
            elif "type" in spec["name"].lower() or "position" in spec["name"].lower():
                result[spec["name"]] = np.zeros(shape, dtype=dtype)
            else:
                high = min(100, int((index_ranges or {}).get(spec["name"], {}).get("max", 99)) + 1)
                result[spec["name"]] = rng.integers(0, max(1, high), size=shape).astype(dtype)
        elif dtype.kind == "b":
            result[spec["name"]] = np.ones(shape, dtype=dtype)
        else:
            result[spec["name"]] = rng.standard_normal(shape).astype(dtype)
    return result


def drop_frozen_inputs(inputs: dict, frozen: list[dict] | None) -> dict:
    """``inputs`` without the build's frozen inputs, each checked to carry exactly its frozen value.

    A frozen input was bound to a constant at compile time (``--freeze-input``), so the library
    no longer takes it. Passing it anyway is fine if the value is the frozen one; any other value
    would be silently ignored, so it is refused.
    """
    if not frozen:
        return inputs
    kept = dict(inputs)
    for record in frozen:
        name = record["name"]
        if name not in kept:
            continue
        given = np.asarray(kept.pop(name))
        want = np.asarray(record["value"], dtype=np.dtype(record["dtype"]))
        same = given.size == want.size and given.dtype.kind in "biuf" and np.array_equal(given.reshape(want.shape).astype(np.float64), want.astype(np.float64))
        if not same:
            shown = given.tolist() if given.size <= 8 else f"{given.dtype}[{'x'.join(map(str, given.shape))}]"
            raise InputError(f"input '{name}' was frozen to {record['value']} at compile time (--freeze-input); got {shown}")
    return kept
