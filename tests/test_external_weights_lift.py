"""``external_weights.lift_weights`` on hand-built Relax modules: what it lifts, what it leaves embedded, and why.

Fast (no ONNX, one tiny ``tvm.compile``): equal constants become one parameter and one file tensor;
constants under the size threshold, in private functions, or written by ``call_tir_inplace`` stay in
the library; the lifted function computes what the original does (float64 numpy reference, rtol and
atol 1e-6: three fp32 roundings).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_autoglm.external_weights import MIN_LIFT_BYTES, lift_weights

ROWS, COLS = 16, 64  # a 16 x 64 fp32 constant is 4 KiB: above MIN_LIFT_BYTES


def _weight(seed):
    return np.random.default_rng(seed).standard_normal((ROWS, COLS)).astype("float32")


def _module(body, private_body=None):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((ROWS, COLS), "float32"))
    if private_body is not None:
        y = relax.Var("y", relax.TensorType((ROWS, COLS), "float32"))
        with bb.function("helper", [y], private=True):
            with bb.dataflow():
                out = bb.emit_output(private_body(bb, y))
            bb.emit_func_output(out)
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def test_equal_constants_share_one_parameter_and_the_result_is_unchanged():
    w, v = _weight(0), _weight(1)

    def body(bb, x):
        a = bb.emit(relax.op.add(x, relax.const(w)))
        b = bb.emit(relax.op.multiply(a, relax.const(w.copy())))  # another object, same content
        return bb.emit(relax.op.subtract(b, relax.const(v)))

    mod, table = lift_weights(_module(body))
    assert table.functions == {"main": ["w0", "w1"]} and len(table.tensors) == 2
    main = mod["main"]
    assert len(main.params) == 3 and int(main.attrs["num_input"]) == 1
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    x = np.random.default_rng(2).standard_normal((ROWS, COLS)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x), *[table.tensors[n] for n in table.functions["main"]]).numpy()
    want = (x.astype(np.float64) + w) * w - v
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_small_constants_stay_in_the_library():
    small = np.ones((2, COLS // 2), "float32")  # 256 bytes
    assert small.nbytes < MIN_LIFT_BYTES

    def body(bb, x):
        half = bb.emit(relax.op.strided_slice(x, [0, 1], [0, 0], [2, COLS // 2]))
        return bb.emit(relax.op.add(half, relax.const(small)))

    mod, table = lift_weights(_module(body))
    assert table.functions == {} and table.embedded_bytes == small.nbytes
    assert len(mod["main"].params) == 1


def test_private_function_constants_stay_in_the_library():
    w = _weight(3)
    mod, table = lift_weights(_module(lambda bb, x: bb.emit(relax.op.add(x, x)),
                                      private_body=lambda bb, y: bb.emit(relax.op.add(y, relax.const(w)))))
    assert table.functions == {} and table.embedded_bytes == w.nbytes
    helper = next(f for gv, f in mod.functions.items() if gv.name_hint == "helper")
    assert len(helper.params) == 1


def test_a_constant_written_in_place_is_not_lifted():
    from tvm.script import tirx as T

    @T.prim_func(private=True)
    def bump(a: T.Buffer((ROWS, COLS), "float32"), b: T.Buffer((ROWS, COLS), "float32")):
        for i, j in T.grid(ROWS, COLS):
            b[i, j] = b[i, j] + a[i, j]

    w = _weight(4)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((ROWS, COLS), "float32"))
    gv = bb.add_func(bump, "bump")
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.call_tir_inplace(gv, [x, relax.const(w)], [1], relax.TensorType((ROWS, COLS), "float32")))
        bb.emit_func_output(out)
    mod, table = lift_weights(bb.get())
    assert table.functions == {} and table.embedded_bytes == w.nbytes
    assert len(mod["main"].params) == 1


@pytest.mark.parametrize("mode", ["mapped", "external "])
def test_unknown_modes_are_refused(mode):
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.external_weights import check_mode

    with pytest.raises(AutoGLMError, match=f"--weights must be one of embedded, external \\(got '{mode}'\\)"):
        check_mode(mode, "cpu")
