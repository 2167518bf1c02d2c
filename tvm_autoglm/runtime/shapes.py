"""Symbolic input dims at run time: bind each from the arrays given, refuse one outside its range.

The runtime's half of dynamic shapes (``shape_ranges`` is the compiler's half); it lives here so the
lean runtime needs neither onnx nor the compiler.
"""

from __future__ import annotations

from ..errors import InputError


def bind_shape(shape: list, symbols: dict[str, int]) -> tuple[int, ...]:
    """A manifest shape (ints and symbol names) with the symbols' values put in."""
    return tuple(int(d) if not isinstance(d, str) else int(symbols[d]) for d in shape)


def check_shapes(arrays: dict, specs: list[dict], symbolic: dict) -> dict[str, int]:
    """Bind every symbolic dim from the given arrays; refuse one outside its range or inconsistent.

    ``specs``: manifest input specs (shape entries are ints or symbol names); ``symbolic``: the
    manifest's ``symbolic_dims``. Returns ``{symbol: value}``. The error is one line naming the
    input, the dim, the range and the value.
    """
    bound: dict[str, tuple[int, str, int]] = {}
    for spec in specs:
        value = arrays.get(spec["name"])
        if value is None:
            continue
        shape = tuple(value.shape)
        want = spec["shape"]
        if len(shape) != len(want):
            got = "x".join(str(d) for d in shape) or "scalar"
            raise InputError(f"input '{spec['name']}' has shape {got}, expected rank {len(want)} {_text(want)} ({spec['dtype']})")
        for axis, (got, dim) in enumerate(zip(shape, want)):
            if not isinstance(dim, str):
                if got != int(dim):
                    raise InputError(f"input '{spec['name']}' dim {axis} is {got}, expected {dim} (shape {_text(want)}, {spec['dtype']})")
                continue
            lo, hi = int(symbolic[dim]["min"]), int(symbolic[dim]["max"])
            if not lo <= got <= hi:
                raise InputError(f"input '{spec['name']}' dim {axis} ('{dim}') is {got}, outside the compiled range {lo}..{hi}")
            if dim in bound and bound[dim][0] != got:
                first_value, first_input, first_axis = bound[dim]
                raise InputError(
                    f"input '{spec['name']}' dim {axis} ('{dim}') is {got} but input '{first_input}' dim {first_axis} ('{dim}') is {first_value}; they must be equal"
                )
            bound.setdefault(dim, (got, spec["name"], axis))
    return {name: value for name, (value, _, _) in bound.items()}


def _text(shape) -> str:
    return "x".join(str(d) for d in shape)


def pick_function(manifest: dict, symbols: dict[str, int]) -> str:
    """The VM function to call for inputs whose symbolic dims are ``symbols``: an exact variant, else ``main``."""
    for entry in manifest.get("specializations") or []:
        if all(symbols.get(name) == value for name, value in entry["dims"].items()):
            return entry["function"]
    return "main"
