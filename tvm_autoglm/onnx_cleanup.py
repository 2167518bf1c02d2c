"""Freeze an exported ONNX graph to static shapes so TVM's Relax frontend sees constants.

Torch exporters emit shape arithmetic even when every dimension is known at
export time: ``Shape -> Gather -> Concat -> Reshape``, ``ConstantOfShape ->
Expand -> Where`` for attention masks, ``Pad`` with computed pads. TVM's
``from_onnx`` converts those into dynamic Relax code and then fails
("Dynamic pads are not supported yet", "Reshape requires the input new shape
to be Shape", broadcast_to rank errors). Pinning the input dims and folding
every subgraph that only depends on shapes and initializers turns them into
plain constants, after which the graph is static.

Folding uses onnxscript's constant folder (node-level shape inference plus the
ONNX reference evaluator) *without* its pattern rewriter: the rewriter fuses
BatchNorm into Conv, pads into convs and MatMul+Add chains, which is the
compiler's job (and its passes' test material), not a clean-up's. onnx-simplifier
was evaluated too: it folds as well but also rewrites MatMul+Add into Gemm and
needs a compiled extension, so it is not used.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from .errors import AutoGLMError, InputError, ModelLoadError

#: Fold ops whose inputs are all known if no input tensor is larger than this
#: many elements (weights beyond it are left alone: folding a Transpose of a
#: weight matrix is fine but pointless here).
INPUT_SIZE_LIMIT = 1 << 16
#: Never materialise a folded constant above this many elements (a [1,1,S,S]
#: causal mask for S=2048 is 4M elements; larger masks stay computed).
OUTPUT_SIZE_LIMIT = 1 << 22
_MAX_ROUNDS = 6


def fold_static_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Return a copy of ``model`` with static input dims and its shape subgraphs folded.

    ``input_shapes`` maps graph input names to full static shapes; inputs not
    named keep the dims they have (which must then already be static for the
    folding to reach everything). Graph input and output names, input dtypes
    and the numerics (on ONNX Runtime) are unchanged.
    """
    try:
        import onnx_ir as ir
        from onnxscript.optimizer import _constant_folding
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise AutoGLMError("folding ONNX shape subgraphs needs onnxscript", hint="pip install onnxscript") from exc

    proto = _with_static_inputs(model, input_shapes)
    ir_model = ir.from_proto(proto)
    ir.passes.common.InlinePass()(ir_model)
    fold = _constant_folding.FoldConstantsPass(
        shape_inference=True,
        input_size_limit=INPUT_SIZE_LIMIT,
        output_size_limit=OUTPUT_SIZE_LIMIT,
        should_fold=_should_fold,
    )
    clean = ir.passes.common.RemoveUnusedNodesPass()
    # The folder logs "Evaluation failed" when it probes a node it cannot fold
    # (e.g. a Reshape fed by a graph input); that node simply stays.
    log = logging.getLogger("onnxscript")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        for _ in range(_MAX_ROUNDS):
            changed = fold(ir_model).modified
            changed = _fold_gather_elements(ir_model.graph) or changed
            changed = clean(ir_model).modified or changed
            if not changed:
                break
    finally:
        log.setLevel(level)
    ir.passes.common.RemoveUnusedOpsetsPass()(ir_model)
    out = ir.to_proto(ir_model)
    _check_signature(model, out)
    return out


def _should_fold(node) -> bool | None:
    """Fold ConstantOfShape too (onnxscript keeps it by default to save file size).

    TorchScript exports build masks from ``ConstantOfShape(Shape(x))``; once the
    shape is constant, TVM's converter still treats ConstantOfShape's output as
    data-dependent and fails in ``broadcast_to`` with a rank error. A folded
    constant avoids that path; OUTPUT_SIZE_LIMIT still bounds the size.
    """
    if node.domain in ("", "ai.onnx") and node.op_type == "ConstantOfShape":
        return True
    return None


def _fold_gather_elements(graph) -> bool:
    """Fold GatherElements on constants, which onnx's reference evaluator gets wrong.

    TorchScript exports of BERT pick segment ids with
    ``GatherElements(token_type_ids_buffer[1, 512], position slice[1, S])``; the
    reference kernel (``np.choose``) only handles 64 choices and fails, so the
    folder leaves the node, and with it an ``Expand`` to the batch. Here it is
    ``np.take_along_axis``, which is what the op means.
    """
    import onnx_ir as ir

    changed = False
    for node in list(graph):
        if node.op_type != "GatherElements" or node.domain not in ("", "ai.onnx"):
            continue
        data, index = node.inputs[0], node.inputs[1]
        out = node.outputs[0]
        if data is None or index is None or data.const_value is None or index.const_value is None:
            continue
        if out.is_graph_output() or data.const_value.size > INPUT_SIZE_LIMIT:
            continue
        array, idx = data.const_value.numpy(), index.const_value.numpy().astype(np.int64)
        axis = node.attributes.get_int("axis", 0)
        axis = axis + array.ndim if axis < 0 else axis
        idx = np.where(idx < 0, idx + array.shape[axis], idx)
        folded = ir.Value(name=out.name + "_folded", const_value=ir.tensor(np.take_along_axis(array, idx, axis=axis)))
        folded.shape = folded.const_value.shape
        folded.type = ir.TensorType(folded.const_value.dtype)
        graph.register_initializer(folded)
        out.replace_all_uses_with(folded)
        graph.remove(node, safe=True)
        changed = True
    return changed


def _with_static_inputs(model: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Copy ``model`` with the named inputs' dims pinned and stale intermediate shapes dropped."""
    if not isinstance(model, onnx.ModelProto):
        raise ModelLoadError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    unknown = sorted(set(input_shapes) - set(inputs))
    if unknown:
        raise InputError(f"input_shapes names {unknown} which are not graph inputs", hint=f"graph inputs: {sorted(inputs)}")
    for name, shape in input_shapes.items():
        dims = inputs[name].type.tensor_type.shape.dim
        # a str dim is a symbol of a dynamic build (shape_ranges): it stays a named dim_param, which
        # the folder treats as unknown (nothing computed from it folds) and the frontend imports as
        # one tirx.Var per name
        shape = [d if isinstance(d, str) else int(d) for d in shape]
        if any(not isinstance(d, str) and d < 1 for d in shape):
            raise InputError(f"input {name!r}: static shape {shape} has a non-positive dim")
        if len(dims) and len(dims) != len(shape):
            raise InputError(f"input {name!r} has rank {len(dims)} but input_shapes gives {shape}")
        del dims[:]
        for d in shape:
            if isinstance(d, str):
                dims.add().dim_param = d
            else:
                dims.add().dim_value = d
    # Exporters that list initializers as graph inputs (keep_initializers_as_inputs)
    # make every weight look overridable, which blocks folding; they are weights.
    kept = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    # Symbolic value_info from a dynamic export would contradict the pinned dims.
    del graph.value_info[:]
    return proto


def _check_signature(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    init = {t.name for t in before.graph.initializer}
    names_before = [i.name for i in before.graph.input if i.name not in init], [o.name for o in before.graph.output]
    names_after = [i.name for i in after.graph.input], [o.name for o in after.graph.output]
    if names_before != names_after:  # pragma: no cover - guards against folder changes
        raise AutoGLMError(f"shape folding changed the graph signature: {names_before} -> {names_after}")


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Histogram of op types in the main graph (for tests and reports)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


__all__ = ["fold_static_shapes", "op_counts"]
