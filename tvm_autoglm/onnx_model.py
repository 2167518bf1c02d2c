"""Reading an ONNX file and describing its interface, with errors a user can act on.

The frontend's own failures on bad files are deep protobuf or TVM traces; here
each failure names the file and what is wrong with it, and the support check
lists *every* op the frontend cannot convert, at once, before any import work.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from . import frontend
from .errors import AutoGLMError, InputError, ModelLoadError, UnsupportedModelError
from .frontend.checks import refusals
from .support_rules import violations

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic dims) and numpy dtype name."""

    name: str
    shape: tuple
    dtype: str

    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def load_model(model: "str | os.PathLike | onnx.ModelProto") -> tuple[onnx.ModelProto, Path | None]:
    """Load and sanity-check an ONNX model from a path or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"model file {path} not found")
    if not path.is_file():
        raise ModelLoadError(f"model path {path} is not a file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    try:
        # The graph only: external data (models over 2 GB) stays in its files until the importer reads
        # each tensor once (onnx_external.py); onnx.load would hold every tensor in the proto too.
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelLoadError(f"{path} is not a readable ONNX model (truncated or not ONNX): {first}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path} is not a readable ONNX model: it has no graph (truncated or not ONNX)")
    from . import onnx_external

    external = bool(onnx_external.external_tensors(proto))
    if external:
        proto = onnx_external.prepare(proto, path)
    try:
        # by path when data is external: the checker then resolves the files beside the model, not the cwd
        onnx.checker.check_model(str(path) if external else proto)
    except Exception as err:
        text = " ".join(str(err).split())[:400] or type(err).__name__
        raise ModelLoadError(f"{path} is not a valid ONNX model: {text}") from None
    return proto, path


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _spec(value_info) -> TensorSpec:
    tensor = value_info.type.tensor_type
    dims = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return TensorSpec(value_info.name, tuple(dims), _dtype_name(tensor.elem_type))


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    return [_spec(vi) for vi in model.graph.input if vi.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_spec(vi) for vi in model.graph.output]


def resolve_input_specs(model: onnx.ModelProto, overrides: dict[str, list[int]] | None) -> list[TensorSpec]:
    """Static input specs: ONNX shapes with the user's overrides; every dim must end up concrete."""
    inputs = graph_inputs(model)
    overrides = dict(overrides or {})
    known = [spec.name for spec in inputs]
    unknown = [name for name in overrides if name not in known]
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {unknown}; the model's inputs are {known}")
    resolved = []
    for spec in inputs:
        shape = overrides.get(spec.name)
        if shape is not None:
            if len(shape) != len(spec.shape) and spec.shape:
                raise InputError(
                    f"--input-shape {spec.name}: rank {len(shape)} given, the model declares rank {len(spec.shape)} {list(spec.shape)}"
                )
            for given, declared in zip(shape, spec.shape):
                if isinstance(declared, int) and declared > 0 and declared != given:
                    raise InputError(
                        f"--input-shape {spec.name}: {'x'.join(map(str, shape))} conflicts with the model's fixed shape {list(spec.shape)}"
                    )
            spec = TensorSpec(spec.name, tuple(shape), spec.dtype)
        if not spec.is_static():
            dynamic = [d for d in spec.shape if not isinstance(d, int) or d < 0]
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in spec.shape)
            raise InputError(
                f"input '{spec.name}' has dynamic dims {dynamic}; give a static shape with --input-shape {spec.name}:{example}"
            )
        _check_size(spec)
        resolved.append(spec)
    return resolved


#: Largest single input we accept (bytes). A declared dim of 2^40 is a corrupt or hostile
#: model, and failing here beats the OOM killer later.
MAX_INPUT_BYTES = 8 << 30


def _check_size(spec: TensorSpec) -> None:
    try:
        itemsize = np.dtype(spec.dtype).itemsize
    except TypeError:
        raise InputError(f"input '{spec.name}' has unsupported dtype {spec.dtype}") from None
    nbytes = itemsize
    for dim in spec.shape:
        nbytes *= dim
    if nbytes > MAX_INPUT_BYTES:
        raise InputError(
            f"input '{spec.name}' declares shape {list(spec.shape)} ({nbytes / 2**30:.1f} GiB), over the {MAX_INPUT_BYTES >> 30} GiB limit for one input"
        )


def op_histogram(model: onnx.ModelProto) -> Counter:
    return Counter(_op_key(node) for node in model.graph.node)


def _op_key(node) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


#: Ops TVM's frontend converts itself, outside its converter map (``_construct_nodes``).
_STRUCTURAL_OPS = frozenset({"If"})


def supported_ops() -> set[str]:
    return set(frontend.convert_map()) | _STRUCTURAL_OPS


def _nodes_with_subgraphs(graph, prefix: str = ""):
    """(node, display name) for every node of ``graph`` and, recursively, of its subgraphs (If branches)."""
    for index, node in enumerate(graph.node):
        yield node, prefix + (node.name or f"#{index}")
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _nodes_with_subgraphs(sub, f"{prefix}{node.name or f'#{index}'}/{attr.name}/")


def unsupported_nodes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op, node name) for every node the frontend cannot convert, in graph order (If branches included)."""
    supported = supported_ops()
    missing = []
    for node, name in _nodes_with_subgraphs(model.graph):
        ok = node.domain in _DEFAULT_DOMAINS and node.op_type in supported
        if not ok:
            missing.append((_op_key(node), name))
    return missing


def check_supported(model: onnx.ModelProto, source: str = "model", folded: bool = True) -> None:
    """Refuse the model if an op has no converter, or a converter's check refuses a node.

    ``folded``: the model's shape subgraphs are already folded (see ``frontend.checks``).
    """
    missing = unsupported_nodes(model)
    if missing:
        shown = ", ".join(f"{op} (node '{name}')" for op, name in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise UnsupportedModelError(f"{source}: unsupported ONNX ops: {shown}{more}")
    # attribute/dtype conditions (support_rules) and the checks our partial converters register (frontend.checks)
    refused = violations(model) + refusals(model, folded)
    if refused:
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise UnsupportedModelError(f"{source}: unsupported: {'; '.join(refused[:5])}{more}")
