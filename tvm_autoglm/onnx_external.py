"""ONNX external data (``onnx.save(..., save_as_external_data=True)``, every model over 2 GB) without two copies.

``onnx.load`` reads every external tensor into the ModelProto, and TVM's importer then
copies each one into a TVM tensor: the weights are resident twice (three times once the
clean-up has copied the proto). Instead, ``onnx_model.load_model`` loads the graph alone
(:func:`prepare`): tensors up to ``INLINE_BYTES`` (and every ``Constant`` node's value) are read into the proto (the shape folder
and the support rules read small initializers; large ones are weights they never look at),
and the others keep their reference, with the location made absolute so that any copy of the
proto (the clean-up's, the generator's prefill import) still finds the file. The importer
then reads each large tensor straight from the file (:func:`tensor_array`) into the TVM
constant, one tensor at a time (:func:`frontend_reads_external`, around ``from_onnx``).

A reference that points outside the model's folder, at a missing file, or past a file's end
is refused in one line before any work.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import ModelLoadError

#: External tensors up to this size are read into the proto at load (the folder reads inputs up to
#: ``onnx_cleanup.INPUT_SIZE_LIMIT`` elements, 512 KiB at 8 bytes each); larger ones stay in their file.
INLINE_BYTES = 1 << 20
_lock = threading.RLock()


def uses_external(tensor: TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


def _info(tensor: TensorProto) -> dict:
    return {entry.key: entry.value for entry in tensor.external_data}


def external_tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor of the model (subgraphs included) whose data lives in an external file."""
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(proto) if uses_external(t)]


def external_bytes(proto: onnx.ModelProto) -> int:
    """Bytes the model's tensors still hold in external files (what the compile-memory guard adds to the proto)."""
    return sum(_length(t) for t in external_tensors(proto))


def _length(tensor: TensorProto) -> int:
    info = _info(tensor)
    if "length" in info:
        return int(info["length"])
    count = int(np.prod(tensor.dims, dtype=np.int64))
    return count * _itemsize(tensor)


def _itemsize(tensor: TensorProto) -> int:
    storage = helper.tensor_dtype_to_np_dtype(helper.tensor_dtype_to_storage_tensor_dtype(tensor.data_type))
    return np.dtype(storage).itemsize


def prepare(proto: onnx.ModelProto, model_path: Path) -> onnx.ModelProto:
    """Check every external reference of ``proto`` (loaded from ``model_path`` without its data), inline the
    small tensors and make the large ones' locations absolute. Refuses a bad reference in one line."""
    from onnx.external_data_helper import _get_attribute_tensors, _get_initializer_tensors

    base = Path(os.path.abspath(model_path.parent))  # lexical: a symlinked file (a hub cache) stays allowed
    sizes: dict[Path, int] = {}
    # Tensors in node attributes (Constant's value) reach TVM through onnx's own reader, which refuses the
    # absolute locations written below: those are always read in; only initializers may stay in their file.
    tensors = [(t, True) for t in _get_attribute_tensors(proto) if uses_external(t)]
    tensors += [(t, False) for t in _get_initializer_tensors(proto) if uses_external(t)]
    for tensor, attribute in tensors:
        info = _info(tensor)
        location = info.get("location", "")
        where = f"{model_path}: tensor '{tensor.name}'"
        file = Path(os.path.normpath(base / location))
        if not location or Path(location).is_absolute() or base not in file.parents:
            raise ModelLoadError(f"{where}: external data location {location!r} must be a file in the model's folder {base}")
        if file not in sizes:
            if not file.is_file():
                raise ModelLoadError(f"{where}: external data file {file} not found (it must be beside the model)")
            sizes[file] = file.stat().st_size
        offset, length = int(info.get("offset", 0) or 0), _length(tensor)
        count = int(np.prod(tensor.dims, dtype=np.int64))
        if tensor.data_type != TensorProto.STRING and length < count * _itemsize(tensor):
            raise ModelLoadError(f"{where}: external data length {length} is shorter than its {count} elements "
                                 f"({count * _itemsize(tensor)} bytes)")
        if offset < 0 or offset + length > sizes[file]:
            raise ModelLoadError(f"{where}: external data at offset {offset} (+{length} bytes) runs past the end of "
                                 f"{file} ({sizes[file]} bytes): truncated?")
        _set(tensor, "location", str(file))
        if attribute or length <= INLINE_BYTES:
            tensor.raw_data = _read_bytes(tensor)
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]
    return proto


def _set(tensor: TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    entry = tensor.external_data.add()
    entry.key, entry.value = key, value


def _read_bytes(tensor: TensorProto) -> bytes:
    info = _info(tensor)
    with open(info["location"], "rb") as handle:
        handle.seek(int(info.get("offset", 0) or 0))
        return handle.read(_length(tensor))


def tensor_array(tensor: TensorProto) -> np.ndarray:
    """The value of an initializer, reading an external one straight from its file (no copy kept in the proto)."""
    if not uses_external(tensor):
        from onnx.numpy_helper import to_array

        return to_array(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    storage = helper.tensor_dtype_to_storage_tensor_dtype(tensor.data_type)
    if storage == tensor.data_type and np.dtype(dtype).kind in "biufc":
        info = _info(tensor)
        array = np.fromfile(info["location"], dtype=np.dtype(dtype).newbyteorder("<"), count=count,
                            offset=int(info.get("offset", 0) or 0))
        if array.size != count:
            raise ModelLoadError(f"tensor '{tensor.name}': {info['location']} holds {array.size} of its {count} elements (truncated)")
        return array.astype(dtype, copy=False).reshape(tuple(tensor.dims))
    # bfloat16, float8, int4...: let onnx decode the packed storage, from an in-memory copy of this one tensor
    from onnx.numpy_helper import to_array

    inline = TensorProto()
    inline.CopyFrom(tensor)
    inline.raw_data = _read_bytes(tensor)
    inline.data_location = TensorProto.DEFAULT
    del inline.external_data[:]
    return to_array(inline)


@contextlib.contextmanager
def frontend_reads_external():
    """Within the block, TVM's ONNX importer reads external initializers through :func:`tensor_array`."""
    import tvm
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    import warnings

    with _lock, warnings.catch_warnings():
        # from_onnx runs onnx's checker, which warns about the absolute locations prepare() wrote
        warnings.filterwarnings("ignore", message=".*should be a relative path.*")
        original = ONNXGraphImporter._parse_array

        def parse_array(self, tensor_proto):
            if uses_external(tensor_proto):
                return tvm.runtime.tensor(tensor_array(tensor_proto))
            return original(self, tensor_proto)

        ONNXGraphImporter._parse_array = parse_array
        try:
            yield
        finally:
            ONNXGraphImporter._parse_array = original
