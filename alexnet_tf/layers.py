"""Layers the two-tower network needs beyond Keras' own: the paper's Local Response Normalization."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Local Response Normalization across channels (Krizhevsky et al. 2012, section 3.3).

    Computes, for each position and channel i of an NHWC tensor `a`,

        b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta

    with the paper's constants k=2, n=5 (`depth_radius=2`), alpha=1e-4, beta=0.75. The defaults follow the
    paper's text: alpha is *not* divided by n. Krizhevsky's cuda-convnet code divided alpha by n, and Caffe's
    AlexNet used k=1 with alpha/n; pass `alpha=1e-4 / 5, bias=1.0` to reproduce Caffe.

    The normalization is computed in float32 even under a mixed-precision policy (squares of ReLU outputs
    overflow float16 and lose the small alpha term in bfloat16); the result is cast back to the compute dtype.

    Args:
        depth_radius: half-width n/2 of the channel window; the window holds `2 * depth_radius + 1` channels.
        bias: the additive constant k.
        alpha: the scale of the sum of squares.
        beta: the exponent.

    Call arguments:
        inputs: a 4-D tensor `(batch, height, width, channels)`.

    Example:

    >>> layer = LocalResponseNormalization()
    >>> layer(np.ones((1, 2, 2, 8), "float32")).shape
    TensorShape([1, 2, 2, 8])
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(f"depth_radius must be a non-negative integer, got {depth_radius!r}")
        if bias <= 0 or alpha < 0 or beta < 0:
            raise ValueError(
                f"LRN needs bias > 0, alpha >= 0 and beta >= 0, got bias={bias}, alpha={alpha}, beta={beta}"
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        outputs = tf.nn.local_response_normalization(
            tf.cast(inputs, "float32"),
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"depth_radius": self.depth_radius, "bias": self.bias, "alpha": self.alpha, "beta": self.beta}
        )
        return config
