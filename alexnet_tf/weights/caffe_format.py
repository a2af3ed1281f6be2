"""Reading Caffe's files without Caffe: `.caffemodel` (a binary `NetParameter` protobuf, in the current `layer`
layout or the legacy V1 `layers` layout), `.binaryproto` mean files (a `BlobProto`), and caffe-tensorflow's
pickled `.npy` weight dicts.

The protobuf wire format is walked directly over a memory map, so a 233 MB caffemodel is never copied whole: only
the blobs of the layers asked for are read, as NumPy views of the mapped file. Field numbers are Caffe's
`src/caffe/proto/caffe.proto`:

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum),   blobs = 6
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape), data = 5 (packed float),
                      shape = 7 (BlobShape: dim = 1, packed int64), double_data = 8 (packed double)
"""

from __future__ import annotations

import mmap
import pathlib
import pickle
from collections.abc import Iterator

import numpy as np

_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_FIELDS = {_NET_LAYER: (1, 7), _NET_V1_LAYERS: (4, 6)}  # layout -> (name field, blobs field)
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8


class CaffeFormatError(ValueError):
    """A file is not the Caffe (or caffe-tensorflow) file it should be; the message says why, in one line."""


# === protobuf wire format ===
def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise CaffeFormatError("truncated (a number runs past the end of its message)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeFormatError("not a protobuf message (a number longer than 10 bytes)")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message's fields: an int for varints, (start, end) byte ranges
    for everything else. Raises CaffeFormatError on bytes that are not the wire format or run past `end`."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CaffeFormatError("not a protobuf message (field number 0)")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = (pos, pos + size), pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        else:
            raise CaffeFormatError(f"not a protobuf message (wire type {wire})")
        if pos > end:
            raise CaffeFormatError("truncated (a field runs past the end of the file or its message)")
        yield field, wire, value


def _packed_varints(buf: memoryview, start: int, end: int) -> list[int]:
    values, pos = [], start
    while pos < end:
        value, pos = _varint(buf, pos, end)
        values.append(value)
    return values


def _blob(buf: memoryview, start: int, end: int) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (`shape`, else the legacy num/channels/height/width); a view
    of `buf` when the data is packed float32."""
    legacy = {}
    shape: list[int] = []
    chunks: list[np.ndarray] = []
    loose: list[float] = []
    for field, wire, value in _fields(buf, start, end):
        if field in _BLOB_LEGACY_DIMS and wire == 0:
            legacy[field] = value
        elif field == _BLOB_SHAPE and wire == 2:
            for dim_field, dim_wire, dim in _fields(buf, *value):
                if dim_field == 1:
                    shape += _packed_varints(buf, *dim) if dim_wire == 2 else [dim]
        elif field == _BLOB_DATA and wire == 2:
            if (value[1] - value[0]) % 4:
                raise CaffeFormatError("a blob's float data is not a whole number of floats")
            chunks.append(np.frombuffer(buf[value[0] : value[1]], "<f4"))
        elif field == _BLOB_DATA and wire == 5:  # unpacked floats: legal protobuf, never written by Caffe
            loose.append(float(np.frombuffer(buf[value[0] : value[1]], "<f4")[0]))
        elif field == _BLOB_DOUBLE_DATA and wire == 2:
            chunks.append(np.frombuffer(buf[value[0] : value[1]], "<f8").astype(np.float32))
    if loose:
        chunks.append(np.asarray(loose, np.float32))
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not shape:
        shape = [legacy.get(f, 0) for f in _BLOB_LEGACY_DIMS]
        shape = [d for d in shape if d] if any(shape) else []
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise CaffeFormatError(f"a blob of shape {tuple(shape)} holds {data.size} values")
    return data.reshape(shape)


class CaffeModel:
    """An open `.caffemodel`: `layers` maps layer names to their blob ranges; `blobs(name)` reads one layer's
    blobs (weights, bias) as float32 arrays viewing the mapped file. Use as a context manager; copy what you keep
    before it closes."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as error:
            raise CaffeFormatError(f"{path}: cannot read ({error.strerror})") from None
        size = self.path.stat().st_size
        if size == 0:
            self._file.close()
            raise CaffeFormatError(f"{path}: an empty file, not a caffemodel")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = memoryview(self._map)
        self.layout = None
        self.layers: dict[str, list[tuple[int, int]]] = {}
        try:
            self._index(size)
        except CaffeFormatError as error:
            self.close()
            raise CaffeFormatError(f"{path}: not a Caffe NetParameter file: {error}") from None

    def _index(self, size: int) -> None:
        for field, wire, value in _fields(self._buf, 0, size):
            if field not in _LAYER_FIELDS or wire != 2:
                continue
            name_field, blobs_field = _LAYER_FIELDS[field]
            name, blobs = None, []
            for layer_field, layer_wire, layer_value in _fields(self._buf, *value):
                if layer_field == name_field and layer_wire == 2:
                    name = bytes(self._buf[layer_value[0] : layer_value[1]]).decode("utf-8", "replace")
                elif layer_field == blobs_field and layer_wire == 2:
                    blobs.append(layer_value)
            if name is not None and blobs:
                self.layers[name] = blobs
            self.layout = self.layout or ("V1 (layers)" if field == _NET_V1_LAYERS else "current (layer)")
        if self.layout is None:
            raise CaffeFormatError("no layers in it")

    def blobs(self, name: str) -> list[np.ndarray]:
        try:
            return [_blob(self._buf, *span) for span in self.layers[name]]
        except CaffeFormatError as error:
            raise CaffeFormatError(f"{self.path}: layer {name}: {error}") from None

    def close(self) -> None:
        try:
            self._buf.release()
            self._map.close()
        except BufferError:  # arrays still view the map (an error is on its way up): it unmaps when they go
            pass
        self._file.close()

    def __enter__(self) -> CaffeModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_blobproto(path: str | pathlib.Path) -> np.ndarray:
    """A `.binaryproto` file (one BlobProto, e.g. Caffe's imagenet_mean.binaryproto) as a float32 array."""
    data = pathlib.Path(path).read_bytes()
    try:
        return _blob(memoryview(data), 0, len(data)).copy()
    except CaffeFormatError as error:
        raise CaffeFormatError(f"{path}: not a Caffe BlobProto: {error}") from None


# === caffe-tensorflow .npy ===
class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays and nothing else: a weights file cannot run code on load."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "dict"), ("builtins", "list"), ("__builtin__", "dict"), ("__builtin__", "list"),
        ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise CaffeFormatError(f"it pickles {module}.{name}, which a weights file has no need of (refused)")
        return super().find_class(module, name)


def read_npy_weights(path: str | pathlib.Path) -> dict[str, object]:
    """A caffe-tensorflow `.npy` (a pickled dict: layer name -> [weights, biases] or {"weights", "biases"}), loaded
    with an unpickler that admits arrays only. Python 2 pickles (the circulated bvlc_alexnet.npy) load too."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype != np.dtype(object):
                raise CaffeFormatError(f"an array of {dtype} {shape}, not a pickled dict of layers")
            loaded = _ArraysOnly(f, encoding="latin1").load()
    except CaffeFormatError as error:
        raise CaffeFormatError(f"{path}: not a caffe-tensorflow weights file: {error}") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise CaffeFormatError(f"{path}: not a readable .npy file ({error})") from None
    loaded = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(loaded, dict):
        raise CaffeFormatError(f"{path}: holds a {type(loaded).__name__}, not a dict of layer name -> weights")
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in loaded.items()}
