"""Shape-specialised variants of a dynamic build (``--specialize seq=128,256``).

A kernel whose extents are numbers gets our full register tiling (tile sizes are chosen from exact
divisors); one with a symbolic extent gets a more conservative schedule. For the sizes that matter
the build therefore also carries copies of ``main`` with those symbols bound to numbers
(``relax.Function.bind_symbolic_vars``): ``main__seq_128``. Every pass, fusion and scheduling step
then sees them as ordinary static functions. The runtime calls the variant whose symbols equal the
input's dims exactly and ``main`` (the generic kernel) otherwise; nothing is padded.

The manifest lists the variants as ``specializations: [{"function": ..., "dims": {"seq": 128}}]``.
"""

from __future__ import annotations

import itertools
import re

from .errors import AutoGLMError, InputError
from .ir_utils import copy_module
from .runtime.shapes import pick_function  # noqa: F401  (run-time half, re-exported)

_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+(?:,\d+)*)$")


def parse_specialize(items: list[str] | None) -> dict[str, list[int]]:
    """``["seq=128,256"]`` -> ``{"seq": [128, 256]}``."""
    sizes: dict[str, list[int]] = {}
    for item in items or []:
        match = _ITEM.match(item.replace(" ", ""))
        if not match:
            raise AutoGLMError(f"bad --specialize '{item}': expected NAME=SIZE[,SIZE...] (e.g. seq=128,256)")
        values = sizes.setdefault(match.group(1), [])
        values.extend(int(v) for v in match.group(2).split(",") if int(v) not in values)
    return sizes


def variants(specialize: dict[str, list[int]] | None, ranges: dict[str, tuple[int, int]]) -> list[dict[str, int]]:
    """Every combination of the requested sizes, each checked against its symbol's range."""
    if not specialize:
        return []
    for name, values in specialize.items():
        if name not in ranges:
            known = sorted(ranges) or "none (no dim is given a range)"
            raise InputError(f"--specialize {name}: '{name}' is not a symbolic dim of this build; its symbolic dims are {known}")
        lo, hi = ranges[name]
        outside = [v for v in values if not lo <= v <= hi]
        if outside:
            raise InputError(f"--specialize {name}={','.join(map(str, values))}: {outside} outside the range {lo}..{hi} of '{name}'")
    names = sorted(specialize)
    return [dict(zip(names, combo)) for combo in itertools.product(*(sorted(specialize[n]) for n in names))]


def function_name(dims: dict[str, int]) -> str:
    return "main__" + "__".join(f"{name}_{value}" for name, value in sorted(dims.items()))


def add_variants(mod, dims_list: list[dict[str, int]]):
    """``mod`` plus one copy of ``main`` per entry of ``dims_list``, with those symbols bound."""
    if not dims_list:
        return mod
    import tvm
    from tvm.relax.utils import copy_with_new_vars

    out = copy_module(mod)
    main = mod["main"]
    for dims in dims_list:
        name = function_name(dims)
        # fresh Vars (and symbols, so they are bound by name): a module must stay single-assignment
        # across functions (FuseOpsByPattern checks)
        func = copy_with_new_vars(main).bind_symbolic_vars({k: int(v) for k, v in dims.items()}).with_attr("global_symbol", name)
        out[tvm.ir.GlobalVar(name)] = func
    return out


def manifest_entries(dims_list: list[dict[str, int]]) -> list[dict]:
    return [{"function": function_name(dims), "dims": dict(sorted(dims.items()))} for dims in dims_list]
