"""conv1's blocked form against a float64 NumPy convolution: the same sums for the paper's and Caffe's shapes."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.network import space_to_depth


def numpy_convolution(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """'valid' NHWC convolution at `stride` in float64, one kernel tap at a time."""
    size = w.shape[0]
    rows, columns = ((side - size) // stride + 1 for side in x.shape[1:3])
    out = np.zeros((x.shape[0], rows, columns, w.shape[3]))
    for i in range(size):
        for j in range(size):
            window = x[:, i : i + (rows - 1) * stride + 1 : stride, j : j + (columns - 1) * stride + 1 : stride]
            out += np.einsum("nhwc,cf->nhwf", window.astype(np.float64), w[i, j].astype(np.float64))
    return out


@pytest.mark.parametrize("height, width, size, stride", [
    (228, 228, 11, 4),  # the paper's conv1: 224 crops padded by 2
    (227, 227, 11, 4),  # Caffe's: 227 crops unpadded, so the blocks reach one column past the input
    (23, 30, 5, 2),  # not square, a side that leaves rows unread
    (19, 19, 4, 4),  # kernel a multiple of the stride
    (9, 9, 3, 3),
])
def test_blocked_convolution_gives_the_strided_convolutions_sums(height, width, size, stride):
    rng = np.random.default_rng(0)
    x = rng.normal(scale=50.0, size=(2, height, width, 3)).astype("float32")
    w = rng.normal(scale=0.01, size=(size, size, 3, 5)).astype("float32")
    out = space_to_depth.strided_convolution(tf.constant(x), tf.constant(w), stride).numpy()
    reference = numpy_convolution(x, w, stride)
    assert out.shape == reference.shape
    # Any float32 order of the n products (the zero taps added by the blocks change no sum) errs by at most
    # n * 2**-24 * sum |x * w|: the bound, per output, from the arithmetic. A tap or channel out of place errs by
    # about sum |x * w| itself.
    terms = (-(-size // stride) * stride) ** 2 * 3
    bound = terms * 2.0**-24 * numpy_convolution(np.abs(x), np.abs(w), stride)
    assert (np.abs(out - reference) <= bound + 1e-30).all()


def test_blocked_input_is_space_to_depth_where_the_input_fits_the_blocks():
    x = tf.random.normal((2, 228, 228, 3))  # (55 - 1) * 4 + 12 = 228 rows read: no pad, no cut
    np.testing.assert_array_equal(space_to_depth.blocked_input(x, 11, 4), tf.nn.space_to_depth(x, 4))


def test_blocked_kernel_moves_each_tap_to_its_block_and_channel():
    kernel = np.arange(11 * 11 * 3 * 2, dtype="float32").reshape(11, 11, 3, 2)
    blocked = space_to_depth.blocked_kernel(tf.constant(kernel), 4).numpy()
    assert blocked.shape == (3, 3, 48, 2)
    # Tap (by*4 + y, bx*4 + x), channel c -> tap (by, bx), channel (y*4 + x)*3 + c; taps past 11 are zero.
    assert blocked[2, 1, (1 * 4 + 3) * 3 + 2, 1] == kernel[9, 7, 2, 1]
    assert (blocked[2, :, 3 * 4 * 3 :] == 0).all() and (blocked[:, 2, [3 * 3, 3 * 3 + 1, 3 * 3 + 2]] == 0).all()
    assert np.count_nonzero(blocked) == np.count_nonzero(kernel)


def test_bad_shapes_name_the_problem():
    x = tf.zeros((1, 20, 20, 3))
    with pytest.raises(ValueError, match="square kernel"):
        space_to_depth.strided_convolution(x, tf.zeros((5, 3, 3, 4)), 2)
    with pytest.raises(ValueError, match="has 3 channels, the kernel expects 4"):
        space_to_depth.strided_convolution(x, tf.zeros((5, 5, 4, 4)), 2)
    with pytest.raises(ValueError, match="at least 11x11, got 20x8"):
        space_to_depth.strided_convolution(tf.zeros((1, 20, 8, 3)), tf.zeros((11, 11, 3, 4)), 4)


def test_it_is_chosen_only_for_bfloat16_on_amx():
    assert space_to_depth.helps("bfloat16", flags={"avx512f", "amx_bf16"})
    assert not space_to_depth.helps("bfloat16", flags={"avx512f", "avx512_bf16"})
    assert not space_to_depth.helps("float32", flags={"amx_bf16"})
