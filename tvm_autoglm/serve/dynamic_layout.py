"""How requests map onto a dynamic artifact's calls (manifest ``symbolic_dims``).

One dynamic build runs any shape in its ranges, so every request can run at its own shape. Two
requests may share one call only when their shapes agree everywhere but the batch dim:

* without ``--max-batch`` each request runs alone, exactly as sent;
* with ``--max-batch N`` (the user's statement that rows are independent) requests of *equal*
  shapes are stacked along the first dim, up to N requests: if that dim is a symbol (``batch``)
  the call simply has more rows, up to the symbol's maximum; if it is a number B the rows are
  zero-padded to B, as for static builds;
* with ``--length-bucket seq=16 --padding-mask seq=attention_mask`` (see ``padding``) requests are
  first padded up to their bucket's length, so *near* lengths become equal shapes; each response
  is sliced back to its own rows and length.

Requests are grouped by :meth:`DynamicLayout.group_key`: the shape the call will have, batch dim
left out. The batcher only puts requests with one key in a call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import ArtifactError, InputError
from ..runtime.shapes import check_shapes
from .padding import PaddingPlan, plan_padding

#: the name a static leading batch dim B takes in range checks (requests send 1..B rows)
ROWS = "rows"


def dims_label(symbols: dict[str, int]) -> str:
    """``{"seq": 16, "batch": 2}`` -> ``"batch=2,seq=16"``: the metrics' label for a shape."""
    return ",".join(f"{name}={value}" for name, value in sorted(symbols.items()))


def _batch_dim(manifest: dict, symbolic: dict) -> str | int:
    """The first dim, when it is one batch dim shared by every input and output; else a one-line refusal."""
    leading = {}
    for kind, specs in (("input", manifest["inputs"]), ("output", manifest["outputs"])):
        for spec in specs:
            if not spec["shape"]:
                raise ArtifactError(f"--max-batch needs a batch dimension first in every input and output; {kind} '{spec['name']}' is a scalar: serve without --max-batch")
            leading[f"{kind} '{spec['name']}'"] = spec["shape"][0]
    if len({str(d) for d in leading.values()}) != 1:
        listing = ", ".join(f"{k}: {v}" for k, v in leading.items())
        raise ArtifactError(
            f"--max-batch stacks requests along the first dim, which must be one batch dim in every input and output; found {listing}: serve without --max-batch"
        )
    dim = next(iter(leading.values()))
    if isinstance(dim, str):
        if dim not in symbolic:
            raise ArtifactError(f"--max-batch: the first dim '{dim}' is not a symbolic dim of this build: serve without --max-batch")
        for kind, specs in (("input", manifest["inputs"]), ("output", manifest["outputs"])):
            for spec in specs:
                for axis, other in enumerate(spec["shape"][1:], start=1):
                    if isinstance(other, str) and re.search(rf"\b{re.escape(dim)}\b", other):
                        raise ArtifactError(
                            f"--max-batch: the batch dim '{dim}' also sizes {kind} '{spec['name']}' dim {axis} ('{other}'), which stacking requests "
                            "would change too: serve without --max-batch"
                        )
    return dim


@dataclass
class DynamicLayout:
    inputs: list[dict]
    outputs: list[dict]
    symbolic_dims: dict  # the manifest's {symbol: {"min", "max"}}
    max_requests: int = 1
    #: the stacking dim: a symbol (rows grow), an int B (rows zero-padded to B), or None (one request per call)
    batch_dim: str | int | None = None
    padding: PaddingPlan | None = None

    @classmethod
    def from_manifest(cls, manifest: dict, max_batch: int | None, buckets: dict | None = None, masks: dict | None = None) -> "DynamicLayout":
        symbolic = manifest["symbolic_dims"]
        batch_dim, max_requests = None, 1
        if max_batch is not None:
            if max_batch < 1:
                raise InputError(f"--max-batch must be at least 1, got {max_batch}")
            batch_dim = _batch_dim(manifest, symbolic)
            capacity = int(symbolic[batch_dim]["max"]) if isinstance(batch_dim, str) else int(batch_dim)
            if max_batch > capacity:
                what = f"the maximum {capacity} of its batch dim '{batch_dim}'" if isinstance(batch_dim, str) else f"the build's batch dimension {capacity}"
                raise ArtifactError(f"--max-batch {max_batch} exceeds {what}: pass --max-batch {capacity} or less, or recompile with a larger range")
            max_requests = max_batch
        padding = plan_padding(manifest, buckets or {}, masks or {}, batch_dim if isinstance(batch_dim, str) else None)
        return cls(manifest["inputs"], manifest["outputs"], symbolic, max_requests, batch_dim, padding)

    @property
    def batching(self) -> bool:
        return self.batch_dim is not None

    @property
    def capacity(self) -> int | None:
        """Rows one call holds at most (None: one request per call)."""
        if self.batch_dim is None:
            return None
        return int(self.symbolic_dims[self.batch_dim]["max"]) if isinstance(self.batch_dim, str) else int(self.batch_dim)

    def describe(self) -> str:
        if self.batching:
            how = f"stacked along '{self.batch_dim}'" if isinstance(self.batch_dim, str) else f"zero-padded to {self.batch_dim} rows"
            text = f"up to {self.max_requests} request(s) of equal shape per call, {how}"
        else:
            text = "off (each request runs alone at its own shape)"
        return f"{text}; {self.padding.describe()}" if self.padding else f"{text}; no padding along symbolic dims"

    def _checked_specs(self) -> tuple[list[dict], dict]:
        """Input specs and ranges for checking a request: a static batch dim B accepts 1..B rows."""
        if not isinstance(self.batch_dim, int):
            return self.inputs, self.symbolic_dims
        specs = [{**spec, "shape": [ROWS, *spec["shape"][1:]]} for spec in self.inputs]
        return specs, {**self.symbolic_dims, ROWS: {"min": 1, "max": int(self.batch_dim)}}

    def symbols_of(self, arrays: dict[str, np.ndarray]) -> dict[str, int]:
        """The request's value of every symbolic dim (and its rows as ``rows`` under a static batch B)."""
        specs, _ = self._checked_specs()
        bound = {}
        for spec in specs:
            for dim, size in zip(spec["shape"], arrays[spec["name"]].shape):
                if isinstance(dim, str):
                    bound[dim] = int(size)
        return bound

    def rows_of(self, arrays: dict[str, np.ndarray]) -> int:
        """Check dtypes and every dim against its range (one line naming input, dim, range, value); return the rows."""
        for spec in self.inputs:
            value = arrays[spec["name"]]
            if value.dtype != np.dtype(spec["dtype"]):
                raise InputError(f"input '{spec['name']}' has dtype {value.dtype}, expected {np.dtype(spec['dtype'])}")
        specs, ranges = self._checked_specs()
        check_shapes(arrays, specs, ranges)
        return int(arrays[self.inputs[0]["name"]].shape[0]) if self.batching else 1

    def call_symbols(self, arrays: dict[str, np.ndarray]) -> dict[str, int]:
        """The request's symbols after bucketing: the shape of the call it joins (batch dim as sent)."""
        symbols = self.symbols_of(arrays)
        if self.padding:
            symbols = {name: self.padding.padded_size(name, value) for name, value in symbols.items()}
        return symbols

    def group_key(self, arrays: dict[str, np.ndarray]):
        """Requests with equal keys can share a call: equal shapes after bucketing, batch dim left out."""
        stacked = self.batch_dim if isinstance(self.batch_dim, str) else ROWS
        return tuple(sorted((k, v) for k, v in self.call_symbols(arrays).items() if k != stacked))

    def request_label(self, arrays: dict[str, np.ndarray]) -> str:
        return dims_label(self.symbols_of(arrays))

    def pack(self, requests: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
        """One call's inputs: each request padded to the bucket's length (zeros; the mask zero there), then
        stacked along the batch dim (zero rows up to B for a static batch). Returns the padded row count."""
        if not self.batching and not self.padding:
            return requests[0], 0
        target = self.call_symbols(requests[0])
        rows = sum(int(request[self.inputs[0]["name"]].shape[0]) for request in requests) if self.batching else None
        padded_rows = (int(self.batch_dim) - rows) if isinstance(self.batch_dim, int) else 0
        packed = {}
        for spec in self.inputs:
            name = spec["name"]
            parts = [self._pad_one(spec, request[name], target) for request in requests]
            if isinstance(self.batch_dim, int):
                buffer = np.zeros((int(self.batch_dim), *parts[0].shape[1:]), dtype=parts[0].dtype)
                buffer[:rows] = np.concatenate(parts, axis=0)
                packed[name] = buffer
            else:
                packed[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return packed, padded_rows

    def _pad_one(self, spec: dict, value: np.ndarray, target: dict[str, int]) -> np.ndarray:
        if not self.padding:
            return value
        shape = [target.get(dim, size) if isinstance(dim, str) and dim in self.padding.buckets else size for dim, size in zip(spec["shape"], value.shape)]
        if tuple(shape) == value.shape:
            return value
        out = np.zeros(shape, dtype=value.dtype)  # zero padding; for the mask input, zero marks a padded position
        out[tuple(slice(0, size) for size in value.shape)] = value
        return out

    def results(self, outputs: dict[str, np.ndarray], requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Each request's rows of the call's outputs, sliced back to its own length along bucketed dims."""
        results, offset = [], 0
        for request in requests:
            rows = int(request[self.inputs[0]["name"]].shape[0]) if self.batching else None
            own = self.symbols_of(request)
            result = {}
            for name, value in outputs.items():
                index = [slice(None)] * value.ndim
                if rows is not None:
                    index[0] = slice(offset, offset + rows)
                for axis, symbol in (self.padding.sliced.get(name, []) if self.padding else []):
                    index[axis] = slice(0, own[symbol])
                result[name] = np.ascontiguousarray(value[tuple(index)]) if rows is not None or self.padding else value
            results.append(result)
            offset += rows or 0
        return results
