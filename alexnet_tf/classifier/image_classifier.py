"""`ImageClassifier`: a trained AlexNet with its preprocessing and labels, for classifying photos from Python."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.classifier import presets
from alexnet_tf.classifier.test_time import FEATURE_LAYERS, TestTime, inference_copy
from alexnet_tf.data import ops
from alexnet_tf.network.model import AlexNet
from alexnet_tf.process.progress import progress_bar

CROPS = ("center", "ten")


class ImageError(ValueError):
    """An item of `images` that cannot be classified: names the item (its position, and its path if it was given
    one) and why; `index` and `reason` hold the two parts."""

    def __init__(self, index: int, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.index, self.reason = index, reason


class ImageClassifier:
    """A trained two-tower AlexNet, the paper's test-time preprocessing and the run's labels, in one object.

    The preprocessing is the package's own (`alexnet_tf.data.ops`, through `classifier.test_time`): shorter side to
    256, the central 256x256, the training set's mean image subtracted, then the model's crop (224 for the paper's
    variant, 227 for Caffe's), one centre crop or the paper's 10 crops with their softmax averaged. The exported
    `center_crop` and `serving_default` signatures run the same functions, so the answers agree to float32 rounding.
    The network runs as a float32, unplaced copy of the trained one, whatever precision and towers it trained with.

    Args:
        model: a trained `AlexNet` (any precision; tower placement is dropped).
        mean_image: the training set's mean image, float (256, 256, 3) RGB in 0-255, or an RGB triple.
        labels: one name per class (default "0", "1", ...).
        max_pixels: images larger than this (read from the header, before decoding) are refused.

    Example:

    >>> classifier = ImageClassifier.from_preset("runs/demo")
    >>> probabilities = classifier.predict(["photo.jpg"], crops="ten")
    >>> classifier.decode_predictions(probabilities, top=3)
    [[('star', 0.96), ('cross', 0.03), ('triangle', 0.004)]]
    """

    def __init__(self, model: AlexNet, mean_image: np.ndarray | Sequence[float], labels: Sequence[str] | None = None,
                 *, max_pixels: int = ops.DEFAULT_MAX_PIXELS, source: str | os.PathLike | None = None):
        if not isinstance(model, AlexNet):
            raise TypeError(f"model must be an alexnet_tf.AlexNet, got {type(model).__name__}")
        self.labels = [str(i) for i in range(model.num_classes)] if labels is None else [str(x) for x in labels]
        if len(self.labels) != model.num_classes:
            raise ValueError(f"{len(self.labels)} labels for a model of {model.num_classes} classes")
        self.mean_image = np.asarray(mean_image, np.float32)
        self.source = pathlib.Path(source) if source is not None else None
        self._trained_config = keras.saving.serialize_keras_object(model)  # the precision it trained with
        self.model = inference_copy(model)  # the only copy of the weights kept: a float32, unplaced network
        self.test_time = TestTime(self.model, self.mean_image, max_pixels)
        pixels = tf.TensorSpec([None, ops.PAPER_SIZE, ops.PAPER_SIZE, 3], tf.uint8)
        self._probabilities = {crops: tf.function(lambda p, c=crops: self.test_time.probabilities(p, c),
                                                  input_signature=[pixels]) for crops in CROPS}
        self._from_bytes = {crops: tf.function(
            lambda b, c=crops: self.test_time.probabilities(self.test_time.decode_batch(b), c),
            input_signature=[tf.TensorSpec([None], tf.string)]) for crops in CROPS}
        self._square_bytes = tf.function(self.test_time.square, input_signature=[tf.TensorSpec([], tf.string)])
        self._square_array = tf.function(self.test_time.rescale,
                                         input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        self._features = {}

    # === Loading and saving ===
    @classmethod
    def from_preset(cls, path: str | os.PathLike, *, model: str = "best") -> ImageClassifier:
        """From a run directory (`alexnet-tf train` or `import-weights`: its best.keras, else final.keras, with
        stats.npz and labels.txt; `model="final"` for final.keras) or a preset directory (`save_to_preset`).
        Raises `presets.PresetError` naming the path and what was expected; `.keras` files load in Keras' safe
        mode, so one carrying a Lambda layer or other code is refused, never run."""
        loaded = presets.read(path, model)
        return cls(loaded.model, loaded.mean_image, loaded.labels, source=loaded.path)

    def save_to_preset(self, directory: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Write keras-hub's preset layout (config.json, model.weights.h5, metadata.json, preprocessor.json,
        assets/labels.txt, assets/mean_image.npy), atomically; `from_preset(directory)` gives the same answers."""
        loaded = presets.Loaded(self.model, self.mean_image, self.labels, self.source or pathlib.Path("."))
        return presets.save_preset(loaded, directory, config=self._trained_config, overwrite=overwrite)

    @property
    def image_size(self) -> int:
        """The side of the crops the network sees (224 paper, 227 caffe)."""
        return self.model.image_size

    # === Images ===
    @staticmethod
    def _name(index: int, item) -> str:
        return f"image {index}" + (f" ({item})" if isinstance(item, (str, os.PathLike)) else "")

    def _read(self, index: int, item):
        """One item as encoded bytes or a uint8 [H, W, 3] array (a path is read), or ImageError naming it."""
        name = self._name(index, item)
        if isinstance(item, (str, os.PathLike)):
            try:
                return pathlib.Path(item).read_bytes()
            except OSError as error:
                raise ImageError(index, name, f"cannot read it: {error.strerror or error}") from None
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes(item)
        array = np.asarray(item)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
            raise ImageError(index, name, "expected a file path, image bytes or a uint8 array [H, W, 3]; got "
                             f"{type(item).__name__} {array.dtype} {list(array.shape)}")
        return array

    def _square(self, index: int, name: str, item) -> np.ndarray:
        """One read item -> uint8 [256, 256, 3], or ImageError naming it."""
        if isinstance(item, np.ndarray):
            return self._square_array(item).numpy()
        try:
            return self._square_bytes(tf.constant(item)).numpy()
        except tf.errors.OpError as error:
            raise ImageError(index, name, ops.error_reason(error)) from None

    def _chunks(self, images, batch_size: int) -> Iterator[list[tuple[int, str, object]]]:
        """Lists of up to batch_size (index, name, read item): only one chunk's images in memory at a time."""
        if isinstance(images, (str, os.PathLike, bytes)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            raise TypeError("images must be a list of images (paths, bytes or arrays), or an array [n, H, W, 3]")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunk = []
        for index, item in enumerate(images):
            chunk.append((index, self._name(index, item), self._read(index, item)))
            if len(chunk) == batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _pixels(self, chunk: list) -> np.ndarray:
        """uint8 [len(chunk), 256, 256, 3] of a chunk's read items."""
        return np.stack([self._square(index, name, item) for index, name, item in chunk])

    def _batches(self, images, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 [<=batch_size, 256, 256, 3] batches, reading and decoding one batch's images at a time."""
        for chunk in self._chunks(images, batch_size):
            yield self._pixels(chunk)

    # === Answers ===
    def predict(self, images, *, crops: str = "center", batch_size: int = 32) -> np.ndarray:
        """float32 probabilities [n, classes] of `images`: a list whose items are file paths, encoded bytes (JPEG,
        PNG, GIF, BMP) or uint8 arrays [H, W, 3] of any size, or one uint8 array [n, H, W, 3]. `crops`: "center"
        or "ten" (the paper's 10 crops, softmax averaged). Processed `batch_size` images at a time."""
        if crops not in CROPS:
            raise ValueError(f"crops must be one of {CROPS}, got {crops!r}")
        results = []
        for chunk in self._chunks(images, batch_size):
            if all(isinstance(item, bytes) for _, _, item in chunk):
                # Decoding and the network in one graph call, as the exported signatures run them.
                try:
                    results.append(self._from_bytes[crops](tf.constant([item for _, _, item in chunk])).numpy())
                    continue
                except tf.errors.InvalidArgumentError:
                    pass  # a bad image: decoding one at a time below names it
            results.append(self._probabilities[crops](self._pixels(chunk)).numpy())
        return np.concatenate(results) if results else np.zeros((0, self.model.num_classes), np.float32)

    def top_classes(self, probabilities: np.ndarray, top: int = 5) -> np.ndarray:
        """Per image, the indices of the `top` most probable classes, best first (ties: the lower index first)."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.labels):
            raise ValueError(f"expected probabilities [n, {len(self.labels)}], got {list(probabilities.shape)}")
        return np.argsort(-probabilities, axis=1, kind="stable")[:, :max(1, min(int(top), len(self.labels)))]

    def decode_predictions(self, probabilities: np.ndarray, top: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the `top` (label, probability) pairs, best first."""
        order = self.top_classes(probabilities, top)
        return [[(self.labels[c], float(row[c])) for c in classes] for row, classes in zip(probabilities, order)]

    def features(self, images, *, layer: str = "fc7", batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """The activations of a hidden layer for the centre crops, float32 [n, dims]: "fc7" and "fc6" (4096, after
        ReLU, both towers) or "pool5" (9216, flattened); the paper's Figure 4 (right) compares fc7 vectors.
        `progress` shows a bar (for `images` whose length is known)."""
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"layer must be one of {tuple(FEATURE_LAYERS)}, got {layer!r}")
        if layer not in self._features:
            extractor = self.test_time.feature_model(layer)
            pixels = tf.TensorSpec([None, ops.PAPER_SIZE, ops.PAPER_SIZE, 3], tf.uint8)
            self._features[layer] = tf.function(
                lambda p: extractor(self.test_time.centre_crops(p), training=False), input_signature=[pixels])
        run = self._features[layer]
        bar = progress_bar(len(images), "image") if progress else None
        results = []
        for batch in self._batches(images, batch_size):
            results.append(np.asarray(run(batch), np.float32))
            if bar is not None:
                bar.add(len(batch))
        width = int(self.test_time.feature_model(layer).output.shape[-1]) if not results else results[0].shape[1]
        return np.concatenate(results) if results else np.zeros((0, width), np.float32)
