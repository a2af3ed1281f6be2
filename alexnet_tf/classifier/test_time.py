"""The paper's test-time computation on a trained network, in one place: image bytes -> 256x256 (the function
`prepare` uses), mean subtraction, the centre crop or the 10 crops, softmax (averaged over the crops), and the
hidden layers' activations. The exported signatures and `ImageClassifier` both call it, so Python, the shell and
TF Serving give the same answers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from alexnet_tf.data import ops
from alexnet_tf.network.model import AlexNet

FEATURE_LAYERS = {"pool5": "fc6_input", "fc6": "fc7_input", "fc7": "fc8_input"}
"""Hidden layers by the paper's name -> the Keras layer whose output they are (both towers concatenated, dropout
off): pool5 9216 values, fc6 and fc7 4096 each."""


def inference_copy(model: AlexNet, dtype: str = "float32") -> AlexNet:
    """The same weights in an unplaced, uncompiled copy whose layers store and compute in `dtype` ("float32", or
    "bfloat16": LRN and fc8 still in float32, see `AlexNet`), whatever the training precision; no device annotations
    (any single-device host), no optimizer."""
    config = {**model.get_config(), "dtype": dtype, "tower_devices": None}
    copy = AlexNet.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


class TestTime:
    """A network, its training set's mean image and the crop its variant takes (224 paper, 227 caffe).

    Call arguments of the probability functions: `pixels`, uint8 `[batch, 256, 256, 3]` (what `square` makes of
    one image); they return float32 probabilities `[batch, classes]`.
    """

    __test__ = False  # not a pytest class

    def __init__(self, model: AlexNet, mean_image: np.ndarray, max_pixels: int = ops.DEFAULT_MAX_PIXELS):
        self.model = model
        self.size = model.image_size
        self.centred = ops.subtract_mean(mean_image)
        self.square = ops.chain(ops.decode(max_pixels), ops.rescale_to_square(ops.PAPER_SIZE))
        """Image bytes -> uint8 [256, 256, 3]: decode, shorter side to 256, centre crop."""
        self.rescale = ops.rescale_to_square(ops.PAPER_SIZE)
        """Decoded uint8 [H, W, 3] -> [256, 256, 3]."""

    def decode_batch(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """A string batch [B] -> uint8 [B, 256, 256, 3] (inside a graph: the exported signatures)."""
        return tf.map_fn(self.square, image_bytes,
                         fn_output_signature=tf.TensorSpec([ops.PAPER_SIZE, ops.PAPER_SIZE, 3], tf.uint8))

    def _softmax(self, crops: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.cast(self.model(crops, training=False), tf.float32))

    def centre_probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        return self._softmax(self.centre_crops(pixels))

    def ten_crop_probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        crops = ops.ten_crops(self.size)(self.centred(pixels))  # [B, 10, S, S, 3]
        softmax = self._softmax(tf.reshape(crops, [-1, self.size, self.size, 3]))
        return tf.reduce_mean(tf.reshape(softmax, [-1, 10, self.model.num_classes]), axis=1)

    def probabilities(self, pixels: tf.Tensor, crops: str) -> tf.Tensor:
        """`crops`: "center" (one centre crop) or "ten" (the paper's 10, softmax averaged)."""
        return self.ten_crop_probabilities(pixels) if crops == "ten" else self.centre_probabilities(pixels)

    def feature_model(self, layer: str):
        """A Keras model from the crop to a hidden layer's activations (`FEATURE_LAYERS`)."""
        import keras

        return keras.Model(self.model.inputs[0], self.model.get_layer(FEATURE_LAYERS[layer]).output)

    def centre_crops(self, pixels: tf.Tensor) -> tf.Tensor:
        """Mean-subtracted centre crops [B, S, S, 3] of 256x256 pixels."""
        return ops.central_crop(self.size)(self.centred(pixels))
