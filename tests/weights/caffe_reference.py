"""Test-side Caffe: write `.caffemodel` files (both layouts), `.binaryproto` means and caffe-tensorflow `.npy`
weights from scratch, and Caffe's AlexNet forward pass in NumPy (float64, BGR, channel-major, grouped
convolutions, LRN across all channels, 227 input). Independent of `alexnet_tf`: nothing here imports it."""

from __future__ import annotations

import pathlib

import numpy as np

LAYERS = {  # bvlc_alexnet's deploy.prototxt: (weights shape, stride, pad, group)
    "conv1": ((96, 3, 11, 11), 4, 0, 1),
    "conv2": ((256, 48, 5, 5), 1, 2, 2),
    "conv3": ((384, 256, 3, 3), 1, 1, 1),
    "conv4": ((384, 192, 3, 3), 1, 1, 2),
    "conv5": ((256, 192, 3, 3), 1, 1, 2),
    "fc6": ((4096, 9216), None, None, None),
    "fc7": ((4096, 4096), None, None, None),
    "fc8": ((1000, 4096), None, None, None),
}


def random_weights(seed: int = 0, num_classes: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Caffe-layout float32 weights with He scale (so activations stay ~100, where Caffe's LRN changes values by
    tens of percent) and distinct biases; fc8 small, so the softmax is not one-hot."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (shape, *_) in LAYERS.items():
        shape = (num_classes, 4096) if name == "fc8" else shape
        fan_in = int(np.prod(shape[1:]))
        std = 0.02 / np.sqrt(fan_in) if name == "fc8" else np.sqrt(2.0 / fan_in)
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        b = rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.5 if name == "fc8" else 5.0)
        weights[name] = (w, b)
    return weights


# === protobuf wire format ===
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int, wire: int = 2) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    return key + _varint(len(payload)) + payload


def blob(array: np.ndarray, *, legacy: bool) -> bytes:
    """A BlobProto: legacy num/channels/height/width (V1 files: always 4-D, leading 1s) or a BlobShape."""
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        header = b"".join(_field(number, dim, wire=0) for number, dim in zip((1, 2, 3, 4), dims))
    else:
        header = _field(7, _field(1, b"".join(_varint(d) for d in array.shape)))
    return header + _field(5, np.ascontiguousarray(array, "<f4").tobytes())


def caffemodel(weights: dict[str, tuple[np.ndarray, np.ndarray]], *, v1: bool, extra_layers: bool = True) -> bytes:
    """A NetParameter with the given layers (plus weightless data/relu/pool layers, as a real net has)."""
    layers = []
    names = list(weights)
    if extra_layers:
        names = ["data", *names[:1], "relu1", "pool1", *names[1:], "prob"]
    for name in names:
        blobs = [blob(a, legacy=v1) for a in weights.get(name, ())]
        if v1:
            kind = 4 if name.startswith("conv") else 14 if name.startswith("fc") else 18
            body = _field(4, name.encode()) + _field(5, kind, wire=0) + b"".join(_field(6, b) for b in blobs)
            layers.append(_field(2, body))
        else:
            kind = b"Convolution" if name.startswith("conv") else b"InnerProduct" if name.startswith("fc") else b"ReLU"
            body = _field(1, name.encode()) + _field(2, kind) + b"".join(_field(7, b) for b in blobs)
            layers.append(_field(100, body))
    return _field(1, b"CaffeNet") + b"".join(layers)


def write_caffemodel(path: pathlib.Path, weights, *, v1: bool) -> pathlib.Path:
    path.write_bytes(caffemodel(weights, v1=v1))
    return path


def write_binaryproto(path: pathlib.Path, mean_bgr_chw: np.ndarray) -> pathlib.Path:
    """Caffe's mean file: one BlobProto, 1 x 3 x H x W, BGR, channel-major."""
    path.write_bytes(blob(mean_bgr_chw[None], legacy=True))
    return path


def write_npy(path: pathlib.Path, weights) -> pathlib.Path:
    """caffe-tensorflow's layout: kernels HWIO, fully connected (in, out), fc6's rows height-width-channel."""
    converted = {}
    for name, (w, b) in weights.items():
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)
        elif name == "fc6":
            w = w.reshape(4096, 256, 6, 6).transpose(2, 3, 1, 0).reshape(9216, 4096)
        else:
            w = w.T
        converted[name] = [np.ascontiguousarray(w), b]
    np.save(path, converted, allow_pickle=True)
    return path


# === Caffe's forward pass, float64 ===
def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    _, height, width, _, _ = windows.shape
    outputs = []
    c_in, c_out = x.shape[0] // group, w.shape[0] // group
    for g in range(group):
        cols = windows[g * c_in : (g + 1) * c_in].transpose(1, 2, 0, 3, 4).reshape(height * width, -1)
        outputs.append(cols @ w[g * c_out : (g + 1) * c_out].reshape(c_out, -1).T)
    return (np.concatenate(outputs, axis=1) + b).T.reshape(-1, height, width)


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's ACROSS_CHANNELS LRN: x / (k + alpha/size * sum of squares over `size` channels) ** beta."""
    squares = np.pad(x * x, ((size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(squares[i : i + x.shape[0]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def _max_pool(x: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def forward(weights, image_bgr_chw: np.ndarray, *, norm=lrn) -> dict[str, np.ndarray]:
    """Caffe's deploy forward of a mean-subtracted BGR 3 x 227 x 227 image: fc7 (relu) and fc8 (logits).
    `norm` is the normalisation after conv1/conv2 (swap it to see what a per-tower LRN would change)."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    w = {name: (a.astype(np.float64), b.astype(np.float64)) for name, (a, b) in weights.items()}
    x = image_bgr_chw.astype(np.float64)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        _, stride, pad, group = LAYERS[name]
        x = relu(_conv(x, *w[name], stride, pad, group))
        if name in ("conv1", "conv2"):
            x = _max_pool(norm(x))
        elif name == "conv5":
            x = _max_pool(x)
    x = x.reshape(-1)  # channel-height-width, as Caffe flattens
    x = relu(w["fc6"][0] @ x + w["fc6"][1])
    fc7 = relu(w["fc7"][0] @ x + w["fc7"][1])
    logits = w["fc8"][0] @ fc7 + w["fc8"][1]
    return {"fc7": fc7, "logits": logits, "logit_scale": np.abs(w["fc8"][0]) @ fc7 + np.abs(w["fc8"][1])}


def per_tower_lrn(x: np.ndarray) -> np.ndarray:
    """LRN within each half of the channels (the paper's towers), for showing the cross-tower LRN matters."""
    half = x.shape[0] // 2
    return np.concatenate([lrn(x[:half]), lrn(x[half:])])
