"""The forms some of AlexNet's layers take inside a training step that is not XLA-compiled: the layers' own
arithmetic on faster kernels. `AlexNet.call` substitutes them for the layers' calls in training only; inference,
`features` and exports run the layers as built.

- conv1 as a stride-1 convolution over 4x4 space-to-depth blocks, where that was measured faster (bfloat16 on
  AMX CPUs: `space_to_depth.helps`).
- conv1 and conv2 without their ReLU, and the LRN after them as the native op that applies the ReLU as it reads
  its input and the ReLU's gradient as it writes its own (`AlexnetLrn(relu=True)`): ReLU and LRN are one pass over
  the activations each way instead of two. Only where the native kernels are built.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras
import tensorflow as tf

from alexnet_tf.network import lrn, native, space_to_depth
from alexnet_tf.network.layers import CrossTowerLocalResponseNormalization, LocalResponseNormalization

_BEFORE_LRN = ("conv1", "conv2")
"""The convolutions whose ReLU output only the LRN reads, in both variants."""


def convolution_call(layer: keras.layers.Conv2D, inputs: tf.Tensor, *, blocked: bool,
                     activation: bool) -> tf.Tensor:
    """`layer(inputs)` for a Keras Conv2D with equal strides: autocast (inputs and kernel in the layer's compute
    dtype), bias and, if `activation`, the activation; `blocked` over space-to-depth blocks (needs 'valid'
    padding). In the layer's name scope, so that AlexNet places its gradients with the layer's tower."""
    dtype = layer.compute_dtype
    with tf.name_scope(layer.name):
        inputs, kernel = tf.cast(inputs, dtype), tf.cast(layer.kernel, dtype)
        if blocked:
            outputs = space_to_depth.strided_convolution(inputs, kernel, layer.strides[0])
        else:
            outputs = tf.nn.conv2d(inputs, kernel, layer.strides[0], layer.padding.upper())
        if layer.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(layer.bias, dtype))
        if activation and layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs


def relu_lrn_call(layer: LocalResponseNormalization, inputs, training=None):
    """`layer(relu(inputs))` for an LRN layer (per tower, or across towers: a list of two tensors), as the native
    op with the ReLU inside."""
    constants = (layer.depth_radius, layer.bias, layer.alpha, layer.beta)
    with tf.name_scope(layer.name):
        both = tf.concat(inputs, axis=-1) if isinstance(layer, CrossTowerLocalResponseNormalization) else inputs
        outputs = tf.cast(lrn.native_local_response_normalization(both, *constants, relu=True), layer.compute_dtype)
        if isinstance(layer, CrossTowerLocalResponseNormalization):
            return tf.split(outputs, [x.shape[-1] for x in inputs], axis=-1)
        return outputs


@dataclasses.dataclass(frozen=True)
class TrainingForms:
    """Which substitutions a training step makes (`AlexNet.compile` chooses; assign `model.training_forms` to
    choose yourself).

    Attributes:
        blocked_conv1: conv1 over space-to-depth blocks.
        relu_in_lrn: conv1/conv2's ReLU inside the native LRN op (ignored where the native kernels are not built).
    """

    blocked_conv1: bool = False
    relu_in_lrn: bool = False

    def __bool__(self) -> bool:
        return self.blocked_conv1 or self.relu_in_lrn

    @classmethod
    def for_step(cls, compute_dtype: str, *, xla: bool) -> TrainingForms:
        """The forms that pay off for a training step in `compute_dtype` on this host; none under XLA, which
        fuses the graph itself."""
        if xla:
            return cls()
        return cls(blocked_conv1=space_to_depth.helps(compute_dtype), relu_in_lrn=True)

    def substitute(self, layer) -> Callable | None:
        """The form to call instead of `layer`, or None to call the layer itself."""
        paper_layer = layer.name.split("_")[0]
        if paper_layer not in _BEFORE_LRN:
            return None
        relu_in_lrn = self.relu_in_lrn and native.lrn_ops() is not None
        if isinstance(layer, keras.layers.Conv2D):
            blocked = self.blocked_conv1 and paper_layer == "conv1"
            if blocked or relu_in_lrn:
                return functools.partial(convolution_call, layer, blocked=blocked, activation=not relu_in_lrn)
        elif isinstance(layer, LocalResponseNormalization) and relu_in_lrn:
            return functools.partial(relu_lrn_call, layer)
        return None
