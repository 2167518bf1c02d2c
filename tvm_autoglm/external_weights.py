"""``--weights external``: lift the constants of the scheduled module into parameters, written once to a file.

Runs after every graph pass, quantization and scheduling, just before codegen, so what
leaves the ``.so`` are the *transformed* weights (BatchNorm folded, dense weights packed,
int8-quantized): the passes that need constant weights still see constants.

Each public Relax function gets one trailing parameter per constant of at least
``MIN_LIFT_BYTES`` (``num_input`` still counts the real inputs). Constants are keyed by
content, so a weight used by two functions (a generator's ``main`` and ``prefill``, which are
imported separately) or twice in one is stored once. Left embedded, and said so in the
manifest's notes: constants below the size threshold, constants inside private functions
(outlined ``If`` branches: their callers would have to thread them through), and any
constant a ``call_tir_inplace`` writes to (a shared read-only mapping must never be written).

The file format and the loading side live in ``runtime/weight_file.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .runtime.weight_file import ALIGNMENT, aligned, header_bytes

#: Constants smaller than this stay in the library (scalars, tiny tables: not worth a parameter).
MIN_LIFT_BYTES = 1024
#: The ``--weights`` choices; ``embedded`` is the default (constants compiled into the ``.so``).
MODES = ("embedded", "external")


@dataclass
class WeightTable:
    """The lifted weights: unique tensors by name, and each function's trailing parameters in order."""

    tensors: dict = field(default_factory=dict)  # name -> tvm Tensor
    functions: dict = field(default_factory=dict)  # function name -> [tensor name, ...]
    embedded_bytes: int = 0  # constants left in the library (see the module docstring)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(t) for t in self.tensors.values())

    def manifest_entry(self) -> dict:
        """The manifest's ``weights`` section before export (file, size and checksums are added by ``write``)."""
        return {"mode": "external", "tensors": len(self.tensors), "bytes": self.nbytes,
                "embedded_bytes": self.embedded_bytes, "functions": {k: list(v) for k, v in self.functions.items()}}

    def write(self, path: Path) -> dict:
        """Write the weight file; returns ``{"size", "index_sha256", "sha256"}`` for the manifest."""
        records, data_start = self._layout()
        header = header_bytes({"tensors": records})
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for chunk in (header, bytes(data_start - len(header))):
                handle.write(chunk)
                digest.update(chunk)
            position = data_start
            for record in records:
                pad = bytes(int(record["offset"]) - position)
                handle.write(pad)
                digest.update(pad)
                array = np.ascontiguousarray(self.tensors[record["name"]].numpy())
                view = memoryview(array.reshape(-1).view(np.uint8))
                handle.write(view)
                digest.update(view)
                position = int(record["offset"]) + int(record["nbytes"])
            handle.flush()
            os.fsync(handle.fileno())
        return {"size": position, "index_sha256": hashlib.sha256(header).hexdigest(), "sha256": digest.hexdigest()}

    def _layout(self) -> tuple[list[dict], int]:
        """Index records with absolute offsets, and where the data starts (after the header, aligned).

        The header holds the offsets, so its length depends on them: grow the data start
        until the header fits in front of it (two or three rounds at most).
        """
        data_start = ALIGNMENT
        while True:
            records, offset = [], data_start
            for name, tensor in self.tensors.items():
                offset = aligned(offset)
                records.append({"name": name, "dtype": str(tensor.dtype), "shape": [int(d) for d in tensor.shape],
                                "offset": offset, "nbytes": _nbytes(tensor)})
                offset += _nbytes(tensor)
            need = len(header_bytes({"tensors": records}))
            if need <= data_start:
                return records, data_start
            data_start = aligned(need)


def check_mode(mode: str, target) -> None:
    """Refuse an unknown ``--weights`` value, or ``external`` on a target whose runtime cannot map the file."""
    from .errors import AutoGLMError

    if mode not in MODES:
        raise AutoGLMError(f"--weights must be one of {', '.join(MODES)} (got {mode!r})")
    if mode == "external":
        from .backends import for_target
        from .targets import TargetSpec, load_target

        spec = target if isinstance(target, TargetSpec) else load_target(target)
        if for_target(spec).name != "cpu":
            raise AutoGLMError(f"--weights external supports CPU targets only for now (the weights are memory-mapped "
                               f"on the host), got target {spec.name}")


def _nbytes(tensor) -> int:
    count = 1
    for dim in tensor.shape:
        count *= int(dim)
    return count * tvm.runtime.DataType(str(tensor.dtype)).bits // 8


def _written_in_place(func: relax.Function) -> set:
    """Constants passed as the in-place (written) arguments of ``call_tir_inplace``."""
    op = tvm.ir.Op.get("relax.call_tir_inplace")
    found = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(op):
            args = expr.args[1]
            fields = list(args.fields) if isinstance(args, relax.Tuple) else [args]
            indices = [int(i) for i in expr.attrs.inplace_indices]
            for index in indices:
                if 0 <= index < len(fields) and isinstance(fields[index], tvm.ir.GenericConst):
                    found.add(fields[index])

    relax.analysis.post_order_visit(func.body, visit)
    return found


def _constants(func: relax.Function) -> list:
    found = []
    relax.analysis.post_order_visit(func.body, lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
    return found


class _Lifter:
    """Content-keyed naming of constants across functions (one file tensor per distinct value)."""

    def __init__(self, table: WeightTable):
        self.table = table
        self._by_key: dict = {}
        self._key_of: dict = {}

    def name_for(self, const) -> str:
        key = self._key_of.get(const)
        if key is None:
            value = const.value
            array = np.ascontiguousarray(value.numpy())
            digest = hashlib.sha256(f"{value.dtype}{tuple(int(d) for d in value.shape)}".encode())
            digest.update(memoryview(array.reshape(-1).view(np.uint8)))
            key = self._key_of[const] = digest.hexdigest()
        name = self._by_key.get(key)
        if name is None:
            name = self._by_key[key] = f"w{len(self._by_key)}"
            self.table.tensors[name] = const.value
        return name


def lift_weights(mod: tvm.IRModule, min_bytes: int = MIN_LIFT_BYTES) -> tuple[tvm.IRModule, WeightTable]:
    """``mod`` with the public functions' constants turned into trailing parameters, and the table of their values."""
    table = WeightTable()
    lifter = _Lifter(table)
    functions = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            functions[gv] = func
            continue
        constants = _constants(func)
        public = func.attrs is not None and "global_symbol" in func.attrs
        if not public:
            table.embedded_bytes += sum(_nbytes(c.value) for c in set(constants))
            functions[gv] = func
            continue
        pinned = _written_in_place(func)
        params: dict = {}  # constant -> its parameter (two equal constants share one)
        by_name: dict = {}  # tensor name -> parameter
        for const in constants:
            if const in params or const in pinned or _nbytes(const.value) < min_bytes:
                continue
            name = lifter.name_for(const)
            if name not in by_name:
                by_name[name] = relax.Var(name, const.ty)
            params[const] = by_name[name]
        table.embedded_bytes += sum(_nbytes(c.value) for c in set(constants) if c not in params)
        if not params:
            functions[gv] = func
            continue
        names = list(by_name)
        functions[gv] = _with_params(func, params, [by_name[n] for n in names])
        table.functions[str(func.attrs["global_symbol"])] = names
    out = tvm.IRModule(functions, attrs=mod.attrs)
    return out, table


def _with_params(func: relax.Function, params: dict, new_params: list) -> relax.Function:
    @relax.expr_functor.mutator
    class Replace(relax.PyExprMutator):
        def visit_generic_const_(self, op):
            return params.get(op, op)

    body = Replace().visit_expr(func.body)
    attrs = dict(func.attrs) if func.attrs is not None else {}
    attrs.setdefault("num_input", len(func.params))
    return relax.Function(list(func.params) + new_params, body, func.ret_ty, func.is_pure).with_attrs(attrs)
