"""conv1 (11x11 at stride 4 over 3 channels) as a stride-1 convolution over 4x4 space-to-depth blocks.

oneDNN's bfloat16 kernels on AMX are slow for conv1's shape: three input channels fill a sliver of each AMX tile,
and its weight gradient was the costliest op of the training step (74 ms per tower of a 0.69 s step, batch 128, on
an AMX Xeon). Cutting the zero-padded input into 4x4 blocks (`space_to_depth`) and the kernel, padded from 11 to 12
taps with zeros, into 3x3 taps of 4x4 blocks gives the same sums as a stride-1 3x3 convolution over 48 channels,
which AMX runs well: 186 -> 208 img/s on that machine.

The products are the same (the added taps multiply by exact zeros), so only the order in which float32 accumulates
them differs, as between any two convolution algorithms. `training_forms` uses it in graph-mode training steps in
bfloat16 on CPUs with AMX, where it was measured (`helps`); inference and exports keep the plain convolution.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.process import cpu


def helps(compute_dtype: str, *, flags: set[str] | None = None) -> bool:
    """True where the blocked form was measured faster in a training step: bfloat16 compute on a CPU with AMX.

    In float32 (and elsewhere unmeasured) oneDNN's strided kernel is as fast or faster, so it is kept.
    """
    flags = cpu.cpu_flags() if flags is None else flags
    return compute_dtype == "bfloat16" and "amx_bf16" in flags


def blocked_kernel(kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """A [K, K, C, F] kernel as the [n, n, s*s*C, F] kernel of the blocked input, n = ceil(K / s), s = `stride`.

    Tap (by*s + y, bx*s + x) of input channel c becomes tap (by, bx) of channel (y*s + x)*C + c, the channel
    order of `tf.nn.space_to_depth`; taps past K are zero.
    """
    size, _, channels, filters = kernel.shape
    blocks = -(-size // stride)
    padded = tf.pad(kernel, [[0, blocks * stride - size], [0, blocks * stride - size], [0, 0], [0, 0]])
    taps = tf.reshape(padded, [blocks, stride, blocks, stride, channels, filters])
    taps = tf.transpose(taps, [0, 2, 1, 3, 4, 5])
    return tf.reshape(taps, [blocks, blocks, stride * stride * channels, filters])


def blocked_input(inputs: tf.Tensor, size: int, stride: int) -> tf.Tensor:
    """An NHWC input as its s x s blocks (`tf.nn.space_to_depth` order), zero-padded or cut at the bottom and right
    to exactly the rows and columns a 'valid' K x K convolution at stride s reads, K = `size`, with K rounded up to
    a multiple of s."""
    height, width, channels = inputs.shape[1:]
    blocks = -(-size // stride)
    sides = []
    for side in (height, width):
        if side < size:
            raise ValueError(f"a {size}x{size} convolution needs an input of at least {size}x{size}, got "
                             f"{height}x{width}")
        sides.append(((side - size) // stride + blocks) * stride)  # (outputs - 1) * s + n * s
    rows, columns = sides
    inputs = inputs[:, : min(rows, height), : min(columns, width)]
    inputs = tf.pad(inputs, [[0, 0], [0, max(rows - height, 0)], [0, max(columns - width, 0)], [0, 0]])
    batch = tf.shape(inputs)[0]
    # A reshape and transpose, not tf.nn.space_to_depth: the same order, and 4x faster on CPU in bfloat16.
    blocked = tf.reshape(inputs, [batch, rows // stride, stride, columns // stride, stride, channels])
    blocked = tf.transpose(blocked, [0, 1, 3, 2, 4, 5])
    return tf.reshape(blocked, [batch, rows // stride, columns // stride, stride * stride * channels])


def strided_convolution(inputs: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """`tf.nn.conv2d(inputs, kernel, stride, "VALID")` for a square kernel, computed over space-to-depth blocks."""
    size = kernel.shape[0]
    if kernel.shape[1] != size:
        raise ValueError(f"the blocked convolution needs a square kernel, got {kernel.shape[0]}x{kernel.shape[1]}")
    if inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(f"the input has {inputs.shape[-1]} channels, the kernel expects {kernel.shape[2]}")
    return tf.nn.conv2d(blocked_input(inputs, size, stride), blocked_kernel(kernel, stride), 1, "VALID")
