"""Max pooling written so that XLA compiles its training pass well on a CPU.

XLA's own lowering of its gradient is slow there (select-and-scatter, or, for a pool unrolled into strided slices,
one full-size padded tensor per window position, each recomputing the window's argmax). This form gives the same
numbers with a hand-written gradient; with it and LRN's shifted-slices form (`alexnet_tf.network.lrn`), AlexNet's XLA
training step is 1.14x faster (README, Performance).
"""

from __future__ import annotations

import math

import tensorflow as tf

from alexnet_tf.network.graph_gradient import custom_gradient


def _order_preserving_int32(x: tf.Tensor) -> tf.Tensor:
    """float32 -> int32 that orders as the floats do, with -0.0 and +0.0 equal (both 0), as max pooling sees them."""
    bits = tf.bitcast(x, tf.int32)
    flipped = tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)) + 1
    return tf.where(bits < 0, flipped, bits)


def _float_from_order_preserving(ints: tf.Tensor) -> tf.Tensor:
    """Inverse of `_order_preserving_int32` (0 becomes +0.0)."""
    bits = tf.where(ints < 0, tf.bitwise.bitwise_xor(ints - 1, tf.constant(0x7FFFFFFF, tf.int32)), ints)
    return tf.bitcast(bits, tf.float32)


def max_pool(x: tf.Tensor, size: int, stride: int) -> tf.Tensor:
    """Valid max pooling of an NHWC float tensor, with `MaxPoolGrad`'s gradient (ties: first in row-major order).

    Forward: every input value is packed with its position into one int64 key (value bits, then the position
    reversed, so that among equal values the first wins) and pooled with one reduce-window: the pooled key
    carries both the maximum and where it was. Backward: the output gradient is routed to those positions by
    stride x stride phase planes (each a sum of shifted, masked copies of the small output gradient),
    interleaved into the input's shape with one reshape. Nothing input-sized is written more than once.
    """
    dtype = x.dtype
    _, rows, cols, channels = x.shape
    if None in (rows, cols, channels):
        raise ValueError(f"max_pool needs static height, width and channels, got shape {x.shape}")
    out_rows, out_cols = (rows - size) // stride + 1, (cols - size) // stride + 1
    position_bits = max(1, (rows * cols - 1).bit_length())
    last_position = (1 << position_bits) - 1
    # Where each output's window starts, as a flat input position.
    window_start = tf.reshape(
        stride * tf.range(out_rows)[:, None] * cols + stride * tf.range(out_cols)[None, :], [1, out_rows, out_cols, 1]
    )
    shifts = math.ceil(size / stride)  # windows that can cover one input row (or column)

    @custom_gradient
    def pool(x):
        values = tf.cast(_order_preserving_int32(tf.cast(x, tf.float32)), tf.int64)
        position = tf.reshape(tf.range(rows * cols, dtype=tf.int64), [1, rows, cols, 1])
        keys = tf.bitwise.bitwise_or(tf.bitwise.left_shift(values, tf.constant(position_bits, tf.int64)),
                                     last_position - position)
        best = tf.nn.max_pool2d(keys, size, stride, "VALID")
        pooled = _float_from_order_preserving(
            tf.cast(tf.bitwise.right_shift(best, tf.constant(position_bits, tf.int64)), tf.int32)
        )
        winner = last_position - tf.cast(tf.bitwise.bitwise_and(best, tf.constant(last_position, tf.int64)), tf.int32)
        offset = winner - window_start  # i * cols + j for the window's (i, j)

        def grad(upstream):
            upstream = tf.cast(upstream, tf.float32)
            zeros = tf.zeros_like(upstream)
            # Input row r = stride * m + a receives from windows p = m - t with i = a + stride * t.
            planes = []
            for a in range(stride):
                row_planes = []
                for b in range(stride):
                    terms = [
                        tf.pad(tf.where(tf.equal(offset, i * cols + j), upstream, zeros),
                               [[0, 0], [t, shifts - 1 - t], [u, shifts - 1 - u], [0, 0]])
                        for t in range(shifts) for u in range(shifts)
                        for i, j in [(a + stride * t, b + stride * u)] if i < size and j < size
                    ]
                    row_planes.append(tf.add_n(terms) if terms else tf.pad(zeros, [[0, 0], [0, shifts - 1],
                                                                                  [0, shifts - 1], [0, 0]]))
                planes.append(tf.stack(row_planes, axis=3))
            # [N, P', stride, Q', stride, C] -> [N, P' * stride, Q' * stride, C], then fit to the input's shape
            # (rows past the last window get no gradient).
            full_rows, full_cols = (out_rows + shifts - 1) * stride, (out_cols + shifts - 1) * stride
            grads = tf.reshape(tf.stack(planes, axis=2), [-1, full_rows, full_cols, channels])
            grads = grads[:, :rows, :cols]
            grads = tf.pad(grads, [[0, 0], [0, max(0, rows - full_rows)], [0, max(0, cols - full_cols)], [0, 0]])
            return tf.cast(grads, dtype)

        return tf.cast(pooled, dtype), grad

    return pool(x)
