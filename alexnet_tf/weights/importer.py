"""`alexnet-tf import-weights`: Caffe's published two-tower AlexNet (bvlc_alexnet, as a `.caffemodel` or a
caffe-tensorflow `.npy`) -> a run directory every other command accepts.

The weights are read into Caffe's own layout (`CAFFE_SHAPES`: kernels out x in/group x h x w, fully connected
out x in with fc6's inputs in channel-height-width order), checked layer by layer, then converted to the package's
"caffe" variant (`network.model.VARIANTS`): conv1's input channels reversed (Caffe reads BGR, every model here
RGB), each grouped layer split into its two towers, fc6's rows reordered to Keras' height-width-channel flatten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

from alexnet_tf.process import atomic, disk
from alexnet_tf.weights.caffe_format import CaffeFormatError, CaffeModel, read_blobproto, read_npy_weights

CAFFE_SHAPES = {
    "conv1": (96, 3, 11, 11),
    "conv2": (256, 48, 5, 5),
    "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3),
    "conv5": (256, 192, 3, 3),
    "fc6": (4096, 9216),
    "fc7": (4096, 4096),
    "fc8": (None, 4096),  # None: the class count, 1000 for ILSVRC-2012
}
"""bvlc_alexnet's weight blobs in Caffe's layout; the biases have the first dimension's size."""

CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)
"""The per-channel BGR mean Caffe's examples subtract when no mean file is given."""

_ONE_TOWER = {"conv2": 96, "conv4": 384, "conv5": 384}  # a layer's input depth when it is not grouped


class WeightImportError(ValueError):
    """The weights cannot be imported; the message names the file, the layer and the shape at fault."""


@dataclasses.dataclass
class CaffeWeights:
    """Weights and biases per Caffe layer name, in Caffe's layout, float32; where they came from."""

    layers: dict[str, tuple[np.ndarray, np.ndarray]]
    source: pathlib.Path
    kind: str  # e.g. "caffemodel, V1 (layers) layout"
    sha256: str

    def __post_init__(self):
        self.num_classes = int(self.layers["fc8"][0].shape[0])  # kept once `keras_weights` has consumed the layers


def _check(source: pathlib.Path, name: str, weights: np.ndarray, bias: np.ndarray) -> None:
    """Raise, naming the layer and both shapes, where a blob is not bvlc_alexnet's."""
    expected = CAFFE_SHAPES[name]
    if name in _ONE_TOWER and weights.ndim == 4 and weights.shape[1] == _ONE_TOWER[name]:
        raise WeightImportError(
            f"{source}: layer {name} has weights {weights.shape}, ungrouped (one tower): this is a one-tower "
            f"network (e.g. CaffeNet without groups), not the two-tower bvlc_alexnet ({name} expects {expected})")
    if weights.ndim != len(expected) or any(e is not None and e != d for e, d in zip(expected, weights.shape)):
        shown = tuple("C" if e is None else e for e in expected)
        hint = " (torchvision's one-tower AlexNet has 64 conv1 kernels)" if name == "conv1" and \
            weights.shape[:1] == (64,) else ""
        raise WeightImportError(f"{source}: layer {name} has weights of shape {weights.shape}, bvlc_alexnet's are "
                           f"{shown}{hint}")
    if name == "fc8" and weights.shape[0] < 2:
        raise WeightImportError(f"{source}: layer fc8 has {weights.shape[0]} output(s); a classifier needs >= 2")
    if bias.shape != (weights.shape[0],):
        raise WeightImportError(f"{source}: layer {name} has a bias of shape {bias.shape}, "
                                f"expected ({weights.shape[0]},)")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(bias))):
        raise WeightImportError(f"{source}: layer {name} holds NaN or infinite values")


def _squeeze_to(array: np.ndarray, rank: int) -> np.ndarray:
    """Drop leading 1s down to `rank` dimensions: V1 blobs are always 4-D (a bias is 1x1x1xN, fc6 1x1x4096x9216)."""
    while array.ndim > rank and array.shape[0] == 1:
        array = array[0]
    return array


def _digest(layers: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for name in CAFFE_SHAPES:
        for array in layers[name]:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def read_caffemodel(path: str | pathlib.Path) -> CaffeWeights:
    """The eight learned layers of a `.caffemodel` (either layout), checked against bvlc_alexnet's shapes."""
    path = pathlib.Path(path)
    layers = {}
    with CaffeModel(path) as model:
        for name, expected in CAFFE_SHAPES.items():  # in network order: the first layer at fault is named
            if name not in model.layers:
                found = ", ".join(list(model.layers)[:12]) or "none"
                raise WeightImportError(f"{path}: no layer {name} with weights (layers with weights: {found}); "
                                        "bvlc_alexnet names its layers conv1..conv5, fc6..fc8")
            blobs = model.blobs(name)
            if len(blobs) != 2:
                raise WeightImportError(f"{path}: layer {name} has {len(blobs)} blobs, expected weights and bias")
            weights, bias = _squeeze_to(blobs[0], len(expected)), _squeeze_to(blobs[1], 1)
            _check(path, name, weights, bias)
            layers[name] = (weights.copy(), bias.copy())  # copies: the views die with the memory map
            del blobs, weights, bias
        kind = f"caffemodel, {model.layout} layout"
    return CaffeWeights(layers, path, kind, _digest(layers))


def _npy_pair(path: pathlib.Path, name: str, entry) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(entry, dict):
        entry = [entry.get("weights"), entry.get("biases")]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(isinstance(a, np.ndarray) for a in entry):
        raise WeightImportError(f"{path}: layer {name} is not [weights, biases] or {{'weights': ..., 'biases': ...}}")
    return np.asarray(entry[0], np.float32), np.asarray(entry[1], np.float32).reshape(-1)


def read_npy(path: str | pathlib.Path) -> CaffeWeights:
    """A caffe-tensorflow `.npy` (kernels HWIO, fully connected in x out, fc6's rows height-width-channel),
    brought to Caffe's layout and checked like a caffemodel."""
    path = pathlib.Path(path)
    loaded = read_npy_weights(path)
    names = ", ".join(sorted(loaded)) or "none"
    layers = {}
    for name in CAFFE_SHAPES:
        if name not in loaded:
            raise WeightImportError(f"{path}: no layer {name} (layers: {names}); bvlc_alexnet names its layers "
                                    "conv1..conv5, fc6..fc8")
        weights, bias = _npy_pair(path, name, loaded.pop(name))
        if name.startswith("conv") and weights.ndim == 4:
            weights = weights.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif name == "fc6" and weights.shape == (9216, 4096):
            weights = weights.reshape(6, 6, 256, 4096).transpose(3, 2, 0, 1).reshape(4096, 9216)
        elif weights.ndim == 2:
            weights = weights.T
        _check(path, name, weights, bias)
        layers[name] = (np.ascontiguousarray(weights), bias)
    return CaffeWeights(layers, path, "caffe-tensorflow .npy", _digest(layers))


def read_weights(path: str | pathlib.Path) -> CaffeWeights:
    """bvlc_alexnet's weights from a `.caffemodel` or a caffe-tensorflow `.npy` (chosen by the file's first bytes)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise WeightImportError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    try:
        return read_npy(path) if magic == b"\x93NUMPY" else read_caffemodel(path)
    except CaffeFormatError as error:
        raise WeightImportError(str(error)) from None


# === Caffe layout -> the caffe variant's Keras layers ===
def _halves(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the last (output) axis in two: tower A's outputs, tower B's."""
    half = array.shape[-1] // 2
    return np.ascontiguousarray(array[..., :half]), np.ascontiguousarray(array[..., half:])


def keras_weights(caffe: CaffeWeights) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(Keras layer name, [kernel, bias]) for the caffe variant, layer by layer from Caffe's layout. Consumes
    `caffe.layers` as it goes, so a layer's Caffe copy is freed once its Keras copy exists.

    Caffe's group g of a grouped convolution reads input channels g*Cin/2.. and writes output channels g*Cout/2..,
    which is exactly tower g's slice on both sides; ungrouped layers (conv1, conv3, fc) split their outputs only.
    """
    layers = caffe.layers
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        weights, bias = layers.pop(name)
        if name == "conv1":
            weights = weights[:, ::-1]  # BGR input channels -> RGB
        if name.startswith("conv"):
            kernel = weights.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif name == "fc6":
            # Caffe's input index c*36 + h*6 + w over pool5's 256 channels; ours is tower t's flatten
            # (h*6 + w)*128 + c' for c = t*128 + c', tower A's 4608 values first.
            kernel = weights.reshape(4096, 2, 128, 6, 6).transpose(1, 3, 4, 2, 0).reshape(9216, 4096)
        else:
            kernel = weights.T
        del weights
        if name == "fc8":
            yield name, [np.ascontiguousarray(kernel), bias]
            continue
        (kernel_a, kernel_b), (bias_a, bias_b) = _halves(kernel), _halves(bias)
        del kernel
        yield f"{name}_a", [kernel_a, bias_a]
        yield f"{name}_b", [kernel_b, bias_b]


# === mean and labels ===
def read_mean(path: str | pathlib.Path | None, size: int = 256) -> np.ndarray:
    """The mean image (size, size, 3), RGB, 0-255: from Caffe's BGR channel-major `.binaryproto` or a `.npy` of
    that layout ((1,) 3 x H x W; a 3-vector also works), resized to `size` if needed; else Caffe's BGR mean."""
    if path is None:
        bgr = np.array(CAFFE_BGR_MEAN, np.float32)
        return np.broadcast_to(bgr[::-1], (size, size, 3)).copy()
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise WeightImportError(f"--mean {path}: no such file")
    try:
        if path.read_bytes()[:6] == b"\x93NUMPY":
            mean = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            mean = read_blobproto(path)
    except (CaffeFormatError, ValueError) as error:
        raise WeightImportError(f"--mean {path}: {error}") from None
    if mean.ndim == 1 and mean.shape == (3,):
        return np.broadcast_to(mean[::-1], (size, size, 3)).copy()
    mean = mean[0] if mean.ndim == 4 and mean.shape[0] == 1 else mean
    if mean.ndim != 3 or mean.shape[0] != 3 or min(mean.shape[1:]) < 227:
        raise WeightImportError(f"--mean {path}: shape {mean.shape}; expected Caffe's 3 x H x W BGR mean "
                           f"(1 x 3 x 256 x 256 for ImageNet)")
    rgb = mean[::-1].transpose(1, 2, 0)  # BGR channel-major -> RGB height-width-channel
    if rgb.shape[:2] != (size, size):
        import tensorflow as tf

        rgb = tf.image.resize(rgb, (size, size), method="bilinear").numpy()
    return np.ascontiguousarray(rgb, np.float32)


def ilsvrc_labels() -> list[str]:
    """The 1000 ILSVRC-2012 classes in Caffe's order (sorted synset ids, the order tensorflow-datasets uses), each
    as "wnid name, synonyms" like Caffe's synset_words.txt (names from the list tensorflow-datasets ships)."""
    import tensorflow_datasets as tfds

    root = pathlib.Path(tfds.__file__).parent / "datasets"
    wnids = (root / "imagenet2012" / "labels.txt").read_text().split()
    try:
        from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST as names
    except ImportError:  # a tensorflow-datasets without the names: synset ids alone
        names = [""] * len(wnids)
    return [f"{wnid} {name}".strip() for wnid, name in zip(wnids, names)]


def read_labels(path: str | pathlib.Path | None, num_classes: int) -> list[str]:
    """One label per class: the lines of `path` (e.g. Caffe's synset_words.txt), else the ILSVRC-2012 list."""
    if path is None:
        if num_classes != 1000:
            raise WeightImportError(f"fc8 has {num_classes} classes, not ImageNet's 1000: give --labels FILE with one "
                               f"label per line ({num_classes} lines)")
        return ilsvrc_labels()
    path = pathlib.Path(path).expanduser()
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise WeightImportError(f"--labels {path}: cannot read ({error})") from None
    if len(labels) != num_classes:
        raise WeightImportError(f"--labels {path}: {len(labels)} labels for fc8's {num_classes} classes")
    return labels


# === the run directory ===
def run_config():
    """The imported run's config: the caffe variant with Caffe's LRN, init and dropout, ILSVRC-2012 as its data,
    and Caffe's training augmentation (random 227 crops and mirrors, no PCA lighting)."""
    from alexnet_tf.training.config import Config

    return Config.from_dict({
        "preset": "paper",
        "model.variant": "caffe", "model.lrn": "caffe", "model.init": "caffe", "model.dropout": 0.5,
        "data.dataset": "tfds:imagenet2012", "data.pca_std": 0.0,
    })


def import_weights(source: str | pathlib.Path, run_dir: str | pathlib.Path, *, mean: str | None = None,
                   labels: str | None = None, report: Callable[[str], None] = print) -> pathlib.Path:
    """Write RUN_DIR (config.json, final.keras, best.keras, labels.txt, stats.npz, imported.json) from Caffe weights.

    Everything is read and checked before anything is written, and the directory is assembled under a temporary
    name beside RUN_DIR and renamed into place: a bad input or a crash leaves no RUN_DIR, never a partial one.
    """
    from alexnet_tf.data.stats import Stats
    from alexnet_tf.network.model import build_alexnet

    run_dir = pathlib.Path(run_dir).expanduser()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise WeightImportError(f"{run_dir} already exists and is not empty: choose a new run directory")
    caffe = read_weights(source)
    report(f"read {caffe.source} ({caffe.kind}): 8 layers, {caffe.num_classes} classes, "
           f"weights sha256 {caffe.sha256[:12]}...")
    mean_image = read_mean(mean)
    class_labels = read_labels(labels, caffe.num_classes)
    config = run_config()

    model = build_alexnet(caffe.num_classes, init=config.model.init, lrn=config.model.lrn,
                          variant=config.model.variant, dropout=config.model.dropout)
    for name, arrays in keras_weights(caffe):  # one layer at a time: never a second copy of all the weights
        model.get_layer(name).set_weights(arrays)
    imagenet = Stats.imagenet()
    stats = Stats(mean_image, imagenet.rgb_covariance, imagenet.eigval, imagenet.eigvec, 0)

    with disk.guard(run_dir, needed=2 * disk.variable_bytes(model.weights), note=f"{run_dir} was not created"):
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.importing-", dir=run_dir.parent))
        try:
            atomic.write_text(staging / "config.json", config.to_json())
            atomic.write_text(staging / "labels.txt", "\n".join(class_labels) + "\n")
            stats.save(staging / "stats.npz")
            model.save(staging / "final.keras")
            shutil.copyfile(staging / "final.keras", staging / "best.keras")
            provenance = {"source": str(caffe.source), "format": caffe.kind, "weights_sha256": caffe.sha256,
                          "mean": str(mean) if mean else f"per-channel BGR {list(CAFFE_BGR_MEAN)}",
                          "labels": str(labels) if labels else "ILSVRC-2012 synsets (tensorflow-datasets)"}
            atomic.write_text(staging / "imported.json", json.dumps(provenance, indent=2) + "\n")
            if run_dir.is_dir():
                run_dir.rmdir()  # empty (checked above): rename needs the name free
            os.rename(staging, run_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return run_dir
