"""The paper's Local Response Normalization as TensorFlow ops, with its gradient written out.

TensorFlow's own CPU kernels are slow on AlexNet's layers: `LRN` sums each channel window as an Eigen contraction
with a [C, C] band matrix and raises to -beta as `exp(log(d) * -beta)`; its gradient `LRNGrad` recomputes every
window and a scalar `pow` once per element, in scalar loops. The same formula here, with the gradient written out,
takes one of two window sums, chosen for how the op will run:

- `band_matmul_sum` (graph mode: serving and the non-XLA training path) is a matmul with the 0/1 band matrix, which
  oneDNN runs at GEMM speed;
- `shifted_slices_sum` (XLA) adds 2r+1 shifted slices of the zero-padded tensor, which XLA fuses into one pass.

Both sum the same 2r+1 terms (five for the paper's r = 2), in a different order than TensorFlow's kernel:
results agree with `tf.nn.local_response_normalization` to float32 rounding (a few ulps).

A graph-mode *training* step takes a third form, `fused_local_response_normalization`: the same float32 formula as
two small XLA clusters (forward, backward) inside the otherwise unfused graph, so that the ~20 elementwise passes
over each conv1/conv2 activation (casts from and to bfloat16 included) become two. Where the native kernels build
(`native.py`), `native_local_response_normalization` does the same with one C++ pass each way, faster still. The
convolutions stay on oneDNN; inference and exports keep the plain graph ops (TF Serving runs no XLA and loads no
custom ops).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from alexnet_tf.network import native
from alexnet_tf.network.graph_gradient import custom_gradient

WindowSum = Callable[[tf.Tensor, int], tf.Tensor]


def shifted_slices_sum(x: tf.Tensor, radius: int) -> tf.Tensor:
    """sum_{j=i-radius}^{i+radius} x_j over the last axis, zero beyond the edges (shifted slices XLA fuses)."""
    channels = x.shape[-1]
    padded = tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]])
    total = padded[..., :channels]
    for shift in range(1, 2 * radius + 1):
        total += padded[..., shift : shift + channels]
    return total


def band_matrix(channels: int, radius: int) -> np.ndarray:
    """[C, C] float32 with ones where |i - j| <= radius: x @ band sums each channel's window."""
    index = np.arange(channels)
    return (np.abs(index[:, None] - index[None, :]) <= radius).astype(np.float32)


def band_matmul_sum(x: tf.Tensor, radius: int) -> tf.Tensor:
    """The same window sum as `shifted_slices_sum`, as one [N*H*W, C] x [C, C] matmul (oneDNN's GEMM in graph mode)."""
    channels = x.shape[-1]
    rows = tf.reshape(x, [-1, channels])
    return tf.reshape(tf.matmul(rows, tf.constant(band_matrix(channels, radius))), tf.shape(x))


def negative_power(d: tf.Tensor, beta: float) -> tf.Tensor:
    """d ** -beta; for the paper's beta = 0.75 as rsqrt(d) * sqrt(rsqrt(d)), 2.7x faster than XLA's pow on CPU."""
    if beta == 0.75:
        r = tf.math.rsqrt(d)
        return r * tf.sqrt(r)
    if beta == 0.5:
        return tf.math.rsqrt(d)
    return tf.pow(d, -beta)


def local_response_normalization(
    a: tf.Tensor,
    depth_radius: int,
    bias: float,
    alpha: float,
    beta: float,
    window_sum: WindowSum = band_matmul_sum,
    *,
    written_gradient: bool = True,
) -> tf.Tensor:
    """`tf.nn.local_response_normalization` (same positional arguments) of a float32 NHWC tensor.

    b_i = a_i * d_i^-beta with d_i = k + alpha * sum_{j in window(i)} a_j^2, and

        db/da_i = g_i * d_i^-beta - 2 * alpha * beta * a_i * sum_{j in window(i)} g_j * b_j / d_j

    (the window is symmetric, so the sum over the outputs that read a_i is the same window sum).

    `written_gradient=False` (inference: `predict`, exports) computes the same outputs as plain ops, so exported
    graphs hold no gradient override; autodiff still differentiates them.
    """

    def forward(a):
        d = bias + alpha * window_sum(a * a, depth_radius)
        scale = negative_power(d, beta)
        return a * scale, scale, d

    if not written_gradient:
        return forward(a)[0]

    @custom_gradient
    def lrn(a):
        b, scale, d = forward(a)

        def grad(upstream):
            spread = window_sum(upstream * b / d, depth_radius)
            return upstream * scale - (2.0 * alpha * beta) * a * spread

        return b, grad

    return lrn(a)


@functools.cache
def _fused_clusters(depth_radius: int, bias: float, alpha: float, beta: float):
    """The XLA-compiled forward and backward of `fused_local_response_normalization` for one set of constants."""

    @tf.function(jit_compile=True)
    def forward(a):
        a32 = tf.cast(a, tf.float32)
        d = bias + alpha * shifted_slices_sum(a32 * a32, depth_radius)
        scale = negative_power(d, beta)
        b = a32 * scale
        return tf.cast(b, a.dtype), scale, b / d  # b / d: what the backward pass's window sum reads

    @tf.function(jit_compile=True)
    def backward(a, upstream, scale, b_over_d):
        g = tf.cast(upstream, tf.float32)
        spread = shifted_slices_sum(g * b_over_d, depth_radius)
        return tf.cast(g * scale - (2.0 * alpha * beta) * tf.cast(a, tf.float32) * spread, a.dtype)

    return forward, backward


def fused_local_response_normalization(a: tf.Tensor, depth_radius: int, bias: float, alpha: float,
                                       beta: float) -> tf.Tensor:
    """`local_response_normalization` of an NHWC tensor in any float dtype, computed in float32 and returned in
    `a`'s dtype, as one XLA cluster forward and one backward (the same formula and gradient; the backward reads
    the forward's float32 `d^-beta` and `b / d` instead of recomputing the nested window sums).

    For training steps that are not XLA-compiled as a whole: the casts and elementwise passes, about a third of a
    mixed_bfloat16 step's op time on an AMX Xeon, fuse into the two clusters.
    """
    forward, backward = _fused_clusters(int(depth_radius), float(bias), float(alpha), float(beta))

    @custom_gradient
    def lrn(a):
        b, scale, b_over_d = forward(a)

        def grad(upstream):
            if tf.executing_eagerly():
                return backward(a, upstream, scale, b_over_d)
            # The tape calls this outside the layer's name scope; back in it, AlexNet's gradient placement (by
            # scope) puts the backward cluster on the tower's device, as it does the other gradient ops.
            with tf.name_scope(b.op.name.rpartition("/")[0] + "/"):
                return backward(a, upstream, scale, b_over_d)

        return b, grad

    return lrn(a)


def native_local_response_normalization(a: tf.Tensor, depth_radius: int, bias: float, alpha: float,
                                        beta: float, *, relu: bool = False) -> tf.Tensor:
    """`fused_local_response_normalization` as the native ops `AlexnetLrn` / `AlexnetLrnGrad` (float32 or
    bfloat16 tensors, float32 arithmetic, the same window-sum order); the backward recomputes d from `a`, so
    nothing but `a` is kept between the passes. Needs `native.lrn_ops()`.

    With `relu`, `a` is the input of the ReLU before the LRN: the ops compute LRN(ReLU(a)) and its gradient with
    respect to `a`, as `tf.nn.relu` and its ReluGrad would, one pass over the tensor less each way.
    """
    return native.lrn_ops().alexnet_lrn(a, depth_radius=int(depth_radius), bias=float(bias), alpha=float(alpha),
                                        beta=float(beta), relu=bool(relu))  # its gradient: `native.lrn_gradient`


def training_local_response_normalization(a: tf.Tensor, depth_radius: int, bias: float, alpha: float,
                                          beta: float) -> tf.Tensor:
    """The fastest form for a training step that is not XLA-compiled: native where it builds, else fused XLA."""
    form = native_local_response_normalization if native.lrn_ops() else fused_local_response_normalization
    return form(a, depth_radius, bias, alpha, beta)
