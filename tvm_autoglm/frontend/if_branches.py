"""ONNX ``If`` after import: each branch's work in a function of its own.

Two problems with what TVM 0.27's ONNX frontend makes of an ``If``, both fixed here:

1. It converts a branch (``ONNXGraphImporter._convert_subgraph``) with the
   importer's one BlockBuilder, so every binding a converter emits lands in the
   block *around* the ``If``: both branches' work runs before the condition is
   looked at, and only each branch's last expression stays inside. Within
   :func:`scoped_if_branches` each branch is converted in a binding block of its
   own, which becomes the branch's ``SeqExpr``.
2. With several allocations inside the branches, ``StaticPlanBlockMemory``
   reuses a storage allocated in the true branch from inside the false branch,
   where it was never allocated: the false branch segfaults in
   ``StorageObj::AllocTensor``. FuseOps does not fuse inside branches either.
   :func:`outline_if_branches` moves each branch body into a private Relax
   function called from the branch, so memory is planned (and kernels fused)
   per function, and the branches hold nothing but a call.
"""

from __future__ import annotations

import contextlib
import threading

from ..ir_utils import copy_module

_lock = threading.RLock()


def _scoped(original):
    def convert_subgraph(self, bb, graph):
        from tvm import relax

        bb._begin_binding_block()
        try:
            result = original(self, bb, graph)
        finally:
            block = bb._end_block()
        return relax.SeqExpr([block], result) if block.bindings else result

    convert_subgraph.__wrapped__ = original
    return convert_subgraph


@contextlib.contextmanager
def scoped_if_branches():
    """Within the block, TVM's ONNX importer converts each If branch in its own binding block."""
    import tvm.relax.frontend.onnx.onnx_frontend as frontend

    importer = frontend.ONNXGraphImporter
    with _lock:
        original = importer._convert_subgraph
        importer._convert_subgraph = _scoped(original)
        try:
            yield
        finally:
            importer._convert_subgraph = original


def outline_if_branches(mod):
    """Every ``If`` branch of every Relax function becomes a call to a new private function ``<func>_if<N>_<then|else>``.

    The new functions take the branch's free variables as parameters; nested ``If``s are
    outlined in turn (the new functions are visited too). Returns a new module; ``mod`` is
    unchanged. A branch with symbolic shape variables among its free variables is left
    as it is (its parameters could not carry them).
    """
    import tvm
    from tvm import relax

    out = copy_module(mod)
    pending = [gv for gv, func in out.functions.items() if isinstance(func, relax.Function)]
    counter = {"n": 0}
    while pending:
        gv = pending.pop()
        func = out[gv]

        @relax.expr_functor.mutator
        class _Outline(relax.PyExprMutator):
            def visit_if_(self, node):  # noqa: N802 - the functor's name
                cond = self.visit_expr(node.cond)
                counter["n"] += 1
                branches = []
                for label, branch in (("then", node.true_branch), ("else", node.false_branch)):
                    branches.append(self._outline(branch, label))
                return relax.If(cond, branches[0], branches[1])

            def _outline(self, branch, label):
                free = list(relax.analysis.free_vars(branch))
                body = branch if isinstance(branch, relax.SeqExpr) else relax.SeqExpr([], branch)
                new_func = relax.Function(free, body, branch.ty, is_pure=True)
                if relax.analysis.free_symbolic_vars(new_func):
                    return branch
                name = f"{gv.name_hint}_if{counter['n']}_{label}"
                new_func = relax.utils.copy_with_new_vars(new_func)
                new_gv = self.builder_.add_func(new_func, name)
                pending.append(new_gv)
                return relax.SeqExpr([], relax.Call(new_gv, free))

        mutator = _Outline(out)
        new_func = mutator.visit_expr(func)
        out = mutator.builder_.get()
        out[gv] = new_func
    return out
