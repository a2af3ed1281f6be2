"""Layers the two-tower network needs beyond Keras' own: the paper's Local Response Normalization (per tower, and
across both towers as Caffe computes it)."""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_tf.network import lrn, xla_forms


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
    It is `lrn.local_response_normalization` (the formula with its gradient written out and, for beta =
    0.75, no `pow`), not TensorFlow's slow CPU kernels: the channel-window sums are one matmul with a band matrix,
    or, when `use_xla_form` is set (AlexNet sets it when compiled with `jit_compile=True`), shifted slices that XLA
    fuses. Training calls in a graph that is not XLA-compiled run it as one native C++ op each way
    (`lrn.native_local_response_normalization`), or, where those cannot be built, as two small XLA clusters
    (`lrn.fused_local_response_normalization`).

    Args:
        depth_radius: half-width n/2 of the channel window; the window holds `2 * depth_radius + 1` channels.
        bias: the additive constant k.
        alpha: the scale of the sum of squares.
        beta: the exponent.

    Call arguments:
        inputs: a 4-D tensor `(batch, height, width, channels)`.
        training: in a traced training step, selects the fused form (the same numbers to float32 rounding).

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
        self.use_xla_form = False

    def call(self, inputs, training=None):
        constants = (self.depth_radius, self.bias, self.alpha, self.beta)
        if training and not self.use_xla_form:
            return tf.cast(lrn.training_local_response_normalization(inputs, *constants), self.compute_dtype)
        window_sum = lrn.shifted_slices_sum if self.use_xla_form else lrn.band_matmul_sum
        outputs = lrn.local_response_normalization(tf.cast(inputs, "float32"), *constants, window_sum,
                                                   written_gradient=bool(training))
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"depth_radius": self.depth_radius, "bias": self.bias, "alpha": self.alpha, "beta": self.beta}
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class CrossTowerLocalResponseNormalization(LocalResponseNormalization):
    """LRN over the channels of both towers at once, as Caffe's `bvlc_alexnet` computes it: Caffe's LRN layer
    runs on the grouped convolution's whole output, so the windows of the last channels of tower A reach into
    tower B and back. Takes and returns the two towers' tensors, so the towers stay separate everywhere else.

    Call arguments:
        inputs: `[tower_a, tower_b]`, NHWC tensors of the same height and width.
    """

    def call(self, inputs, training=None):
        tower_a, tower_b = inputs
        both = super().call(tf.concat([tower_a, tower_b], axis=-1), training=training)
        return tf.split(both, [tower_a.shape[-1], tower_b.shape[-1]], axis=-1)

    def compute_output_shape(self, input_shape):
        return list(input_shape)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class OverlappingMaxPooling2D(keras.layers.MaxPooling2D):
    """The paper's overlapping max pooling (section 3.4: z=3 windows at stride s=2), "valid" padding.

    Numerically a `keras.layers.MaxPooling2D(3, 2)`. When `use_xla_form` is set (AlexNet sets it when compiled
    with `jit_compile=True`), training calls use `xla_forms.max_pool`, whose gradient XLA compiles into one pass
    over the input instead of its slow select-and-scatter; ties go to the first maximum of the window in
    row-major order, as `MaxPoolGrad` gives them. Without XLA the native op is faster, so the flag is off by
    default and inference always uses the native op.

    Args:
        pool_size: window side z.
        strides: step s.

    Call arguments:
        inputs: a 4-D NHWC tensor.
        training: with `use_xla_form`, selects the XLA form.
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs):
        kwargs.pop("padding", None)
        kwargs.pop("data_format", None)
        super().__init__(pool_size=pool_size, strides=strides, padding="valid", data_format="channels_last", **kwargs)
        self.use_xla_form = False

    def call(self, inputs, training=None):
        if self.use_xla_form and training:
            (size, _), (stride, _) = self.pool_size, self.strides
            return xla_forms.max_pool(inputs, size, stride)
        return super().call(inputs)

    def get_config(self):
        config = super().get_config()
        for key in ("padding", "data_format"):
            config.pop(key, None)
        return config
