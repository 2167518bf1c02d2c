"""Dynamic input dims: parsing the user's ranges and resolving them against the ONNX inputs.

A build is *dynamic* when some input dim is given as a range instead of a number:

* ``--input-shape input_ids:1x1..512`` (also ``input_ids:1..32x1..512``), API
  ``input_shapes={"input_ids": [1, (1, 512)]}``;
* ``--dynamic-dim seq=1..512`` (repeatable), API ``compile(..., dynamic_dims={"seq": (1, 512)})``: every input
  dim the ONNX names ``seq`` stays symbolic over that range. The named ranges travel as their own parameter
  (``compile_model(..., dynamic_dims=...)``), never as attributes of the shapes dict.

A dim the ONNX model names (``dim_param``) keeps that name, so inputs sharing it share one
symbol (``input_ids`` and ``attention_mask`` both have ``seq``); an unnamed dim given a range
is called ``<input>_d<axis>``. The result is a list of :class:`TensorSpec` whose symbolic dims
are the symbol names (strings), and ``{name: (min, max)}`` for the manifest and the runtime
checks. A build with no range anywhere resolves exactly as before (``resolve_input_specs``).
"""

from __future__ import annotations

import re

from . import onnx_model
from .errors import AutoGLMError, InputError
from .onnx_model import TensorSpec, _check_size, graph_inputs
from .runtime.shapes import bind_shape, check_shapes  # noqa: F401  (the runtime's half, re-exported)

#: ``lo..hi`` (both inclusive)
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_range(lo: int, hi: int, what: str) -> tuple[int, int]:
    if lo < 1 or hi < lo:
        raise AutoGLMError(f"bad range {lo}..{hi} in {what}: expected 1 <= min <= max")
    return lo, hi


def parse_dim(token: str, what: str):
    """``"128"`` -> 128, ``"1..512"`` -> (1, 512)."""
    match = _RANGE.match(token)
    if match:
        return _check_range(int(match.group(1)), int(match.group(2)), what)
    value = int(token)
    if value < 0:
        raise ValueError
    return value


def parse_dynamic_dims(items: list[str] | None) -> dict[str, tuple[int, int]]:
    """``["seq=1..512"]`` -> ``{"seq": (1, 512)}``."""
    dims: dict[str, tuple[int, int]] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        match = _RANGE.match(text.strip())
        if not sep or not _NAME.match(name.strip()) or not match:
            raise AutoGLMError(f"bad --dynamic-dim '{item}': expected NAME=MIN..MAX (e.g. seq=1..512)")
        dims[name.strip()] = _check_range(int(match.group(1)), int(match.group(2)), f"--dynamic-dim '{item}'")
    return dims


def normalize_api_dim(dim, what: str):
    """An API dim: int, or a (min, max) pair / list."""
    if isinstance(dim, (tuple, list)):
        if len(dim) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in dim):
            raise InputError(f"{what}: a range is a (min, max) pair of ints, got {dim!r}")
        return _check_range(int(dim[0]), int(dim[1]), what)
    return dim


def _named_range(name: str, value) -> tuple[int, int]:
    """A ``dynamic_dims`` entry: always a (min, max) range (a single size belongs in ``input_shapes``)."""
    if not isinstance(value, (tuple, list)):
        raise InputError(f"dynamic_dims[{name!r}]: a range is a (min, max) pair of ints, got {value!r}")
    return normalize_api_dim(value, f"dynamic_dims[{name!r}]")


def has_ranges(shapes, dynamic_dims: dict | None = None) -> bool:
    """Whether a build with these ``input_shapes`` and ``dynamic_dims`` is dynamic."""
    if dynamic_dims:
        return True
    return any(isinstance(d, (tuple, list)) for dims in (shapes or {}).values() for d in dims)


def resolve(model, shapes, dynamic_dims: dict | None = None) -> tuple[list, dict[str, tuple[int, int]]]:
    """(input specs, ``{symbol: (min, max)}``). Static builds go through ``resolve_input_specs`` unchanged.

    ``dynamic_dims``: ``{onnx dim name: (min, max)}`` (``--dynamic-dim``), on top of ranges in ``shapes``."""
    if not has_ranges(shapes, dynamic_dims):
        return onnx_model.resolve_input_specs(model, shapes), {}
    return _resolve_dynamic(model, shapes or {}, dynamic_dims or {})


def _resolve_dynamic(model, shapes, dynamic_dims):
    inputs = graph_inputs(model)
    known = [spec.name for spec in inputs]
    unknown = [name for name in shapes if name not in known]
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {unknown}; the model's inputs are {known}")
    named = {name: _named_range(name, value) for name, value in dynamic_dims.items()}
    declared_names = {d for spec in inputs for d in spec.shape if isinstance(d, str) and d != "?"}
    missing = sorted(set(named) - declared_names)
    if missing:
        raise InputError(f"--dynamic-dim names {missing}, which no input declares; the inputs' named dims are {sorted(declared_names)}")
    # ranges given per input for a named ONNX dim apply to that name everywhere (one symbol)
    for spec in inputs:
        for axis, (given, declared) in enumerate(zip(shapes.get(spec.name, ()), spec.shape)):
            given = normalize_api_dim(given, f"input_shapes[{spec.name!r}][{axis}]")
            if isinstance(given, tuple) and isinstance(declared, str) and declared != "?":
                if named.setdefault(declared, given) != given:
                    raise InputError(f"dim '{declared}' has two ranges: {named[declared][0]}..{named[declared][1]} and {given[0]}..{given[1]} (input '{spec.name}')")
    resolved, ranges = [], {}
    for spec in inputs:
        given = shapes.get(spec.name)
        if given is not None and spec.shape and len(given) != len(spec.shape):
            raise InputError(f"--input-shape {spec.name}: rank {len(given)} given, the model declares rank {len(spec.shape)} {list(spec.shape)}")
        dims = []
        for axis, declared in enumerate(spec.shape):
            dim = normalize_api_dim(given[axis], f"input_shapes[{spec.name!r}][{axis}]") if given is not None else declared
            if isinstance(dim, tuple):
                if isinstance(declared, int) and declared > 0:
                    raise InputError(f"--input-shape {spec.name}: dim {axis} is fixed to {declared} in the model; it cannot be the range {dim[0]}..{dim[1]}")
                symbol = declared if isinstance(declared, str) and declared != "?" else f"{spec.name}_d{axis}"
                if not _NAME.match(symbol):
                    symbol = re.sub(r"\W", "_", f"{spec.name}_d{axis}")
                ranges[symbol] = dim
                dims.append(symbol)
            elif isinstance(dim, str):
                if dim in named:
                    ranges[dim] = named[dim]
                    dims.append(dim)
                    continue
                example = f"{dim}=1..512" if dim != "?" else None
                hint = f"; give a size with --input-shape or a range with --dynamic-dim {example}" if example else "; give a size or a range with --input-shape"
                raise InputError(f"input '{spec.name}' dim {axis} ('{dim}') is dynamic{hint}")
            else:
                if isinstance(declared, str) and declared in named:
                    lo, hi = named[declared]
                    raise InputError(
                        f"input '{spec.name}' dim {axis} ('{declared}') is {dim}, but '{declared}' is the range {lo}..{hi} elsewhere; give it the range or leave it out"
                    )
                if isinstance(declared, int) and declared > 0 and declared != dim:
                    raise InputError(f"--input-shape {spec.name}: dim {axis} is {dim}, conflicting with the model's fixed {declared}")
                dims.append(int(dim))
        out = TensorSpec(spec.name, tuple(dims), spec.dtype)
        _check_size(TensorSpec(spec.name, tuple(ranges[d][1] if isinstance(d, str) else d for d in dims), spec.dtype))
        resolved.append(out)
    return resolved, {name: tuple(r) for name, r in ranges.items()}


def manifest_dims(ranges: dict[str, tuple[int, int]]) -> dict:
    """``{"seq": {"min": 1, "max": 512}}`` for the manifest's ``symbolic_dims``."""
    return {name: {"min": int(lo), "max": int(hi)} for name, (lo, hi) in sorted(ranges.items())}


def parse_input_shapes(items: list[str] | None) -> dict[str, list[int]]:
    """``["input_ids:1x128", "mask:1x1..512"]`` -> ``{"input_ids": [1, 128], "mask": [1, (1, 512)]}``."""
    shapes: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            # a dim is a size or an inclusive range MIN..MAX (a dynamic build: shape_ranges)
            shape = [parse_dim(d, f"--input-shape '{item}'") for d in dims.lower().split("x")] if dims else []
        except ValueError:
            raise AutoGLMError(f"bad --input-shape '{item}': expected NAME:D1xD2x... with sizes or ranges MIN..MAX (e.g. input_ids:1x128 or input_ids:1x1..512)") from None
        shapes[name] = shape
    return shapes
