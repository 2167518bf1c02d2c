"""``--freeze-input NAME=VALUE``: bind a graph input to a constant before import.

Real models switch on run-time scalars (a sample rate, a mode flag) through
ONNX ``If`` nodes and shape arithmetic. When a deployment only ever uses one
value, binding the input to it turns those into constants, which the ONNX
clean-up folds away: the ``If`` disappears and the kernels see static shapes.
The frozen input is gone from the compiled function; the manifest records it
(``frozen_inputs``) so every runtime can accept it given with exactly that
value (or omitted) and refuse any other value instead of silently ignoring it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InputError


def parse_freeze_items(items: list[str] | None) -> dict[str, str]:
    """``["sr=16000", "axes=0,2"]`` -> ``{"sr": "16000", "axes": "0,2"}`` (values parsed against the dtype later)."""
    frozen: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InputError(f"bad --freeze-input '{item}': expected NAME=VALUE or NAME=V1,V2,... (e.g. sr=16000)")
        if name.strip() in frozen:
            raise InputError(f"--freeze-input {name.strip()} given twice")
        frozen[name.strip()] = value.strip()
    return frozen


def _parse_text(name: str, text: str, dtype: np.dtype) -> np.ndarray:
    parts = [p.strip() for p in text.split(",")]
    values = []
    for part in parts:
        try:
            if dtype.kind == "b":
                lowered = part.lower()
                if lowered not in ("0", "1", "true", "false"):
                    raise ValueError
                values.append(lowered in ("1", "true"))
            elif dtype.kind in "iu":
                values.append(int(part))
            else:
                values.append(float(part))
        except ValueError:
            raise InputError(f"--freeze-input {name}={text}: '{part}' is not a {dtype.name} value") from None
    return np.array(values[0] if len(values) == 1 and "," not in text else values)


def _cast_exactly(name: str, raw, dtype: np.dtype) -> np.ndarray:
    """``raw`` as ``dtype``, refusing a value the dtype cannot hold exactly (16000.5 into int64, 300 into uint8)."""
    array = _parse_text(name, raw, dtype) if isinstance(raw, str) else np.asarray(raw)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InputError(f"freeze input {name}: value {raw!r} is not numeric")
    try:
        with np.errstate(all="ignore"):
            cast = array.astype(dtype)
    except (TypeError, ValueError):
        raise InputError(f"freeze input {name}: value {raw!r} cannot be cast to {dtype.name}") from None
    if not np.array_equal(cast.astype(np.float64), array.astype(np.float64)):
        raise InputError(f"freeze input {name}: value {raw!r} is not exactly representable as {dtype.name}")
    return cast


def _fit_shape(name: str, value: np.ndarray, declared: tuple) -> np.ndarray:
    """Reshape ``value`` to the input's declared shape; a symbolic dim takes its length from the value (rank <= 1 only)."""
    if all(isinstance(d, int) and d >= 0 for d in declared):
        want = tuple(int(d) for d in declared)
        if value.size != int(np.prod(want, dtype=np.int64)):
            raise InputError(
                f"freeze input {name}: {value.size} value(s) given, the input's declared shape {list(declared)} holds {int(np.prod(want, dtype=np.int64))}"
            )
        return value.reshape(want)
    if len(declared) == 1:
        return value.reshape(-1)
    raise InputError(f"freeze input {name}: its declared shape {list(declared)} has symbolic dims; only scalars and 1-D inputs can take their shape from the value")


def freeze_inputs(model: onnx.ModelProto, values: dict | None) -> tuple[onnx.ModelProto, list[dict]]:
    """(copy of ``model`` with the named inputs turned into initializers, manifest records).

    Each record is ``{"name", "dtype", "shape", "value"}`` with ``value`` a (nested) list.
    """
    from .onnx_model import graph_inputs

    if not values:
        return model, []
    specs = {spec.name: spec for spec in graph_inputs(model)}
    unknown = [name for name in values if name not in specs]
    if unknown:
        raise InputError(f"freeze input(s) {unknown} are not inputs of the model; its inputs are {list(specs)}")
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    records = []
    kept = [vi for vi in proto.graph.input if vi.name not in values]
    for name, raw in values.items():
        spec = specs[name]
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise InputError(f"freeze input {name}: its dtype {spec.dtype} cannot be frozen") from None
        array = _fit_shape(name, _cast_exactly(name, raw, dtype), spec.shape)
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
        records.append({"name": name, "dtype": dtype.name, "shape": list(array.shape), "value": array.tolist()})
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    return proto, records
