"""LocalResponseNormalization against a NumPy transcription of the paper's formula (section 3.3)."""

import numpy as np
import pytest

from alexnet_tf import LocalResponseNormalization
from tests.helpers import check_layer


def numpy_lrn(a: np.ndarray, k: float = 2.0, n: int = 5, alpha: float = 1e-4, beta: float = 0.75) -> np.ndarray:
    """b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta, looped as in the paper."""
    a = a.astype(np.float64)
    channels = a.shape[-1]
    b = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    return b


def test_paper_defaults_match_the_formula_including_channel_edges():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 50, size=(2, 3, 3, 7)).astype("float32")
    check_layer(LocalResponseNormalization, {}, x, numpy_lrn(x), rtol=1e-5, atol=1e-5)


def test_large_activations_are_actually_normalised():
    # ReLU outputs in the hundreds: the alpha term dominates k, so the result is far from a / k^beta.
    x = np.full((1, 1, 1, 8), 300.0, "float32")
    x[..., 0] = 1000.0
    expected = numpy_lrn(x)
    np.testing.assert_allclose(LocalResponseNormalization()(x), expected, rtol=1e-5)
    assert expected[0, 0, 0, 1] < 300.0 / 2.0**0.75 * 0.5  # the normalisation is doing real work here


@pytest.mark.parametrize("kwargs, numpy_kwargs", [
    ({"bias": 1.0, "alpha": 2e-5}, {"k": 1.0, "alpha": 2e-5}),  # Caffe: k=1, alpha/n
    ({"depth_radius": 1, "beta": 0.5}, {"n": 3, "beta": 0.5}),
])
def test_documented_variants(kwargs, numpy_kwargs):
    x = np.random.default_rng(1).uniform(0, 100, size=(1, 2, 2, 6)).astype("float32")
    np.testing.assert_allclose(LocalResponseNormalization(**kwargs)(x), numpy_lrn(x, **numpy_kwargs), rtol=1e-5)


def test_computes_in_float32_under_float16():
    # 300^2 * 5 overflows nothing in float32 but the float16 sum of squares (65504 max) would be inf.
    x = np.full((1, 1, 1, 5), 300.0, "float32")
    out = LocalResponseNormalization(dtype="mixed_float16")(x)
    assert np.all(np.isfinite(np.asarray(out, "float32")))
    np.testing.assert_allclose(np.asarray(out, "float32"), numpy_lrn(x), rtol=1e-3)


@pytest.mark.parametrize("kwargs", [{"depth_radius": -1}, {"depth_radius": 1.5}, {"bias": 0.0}, {"alpha": -1.0}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        LocalResponseNormalization(**kwargs)


def numpy_max_pool(x: np.ndarray, size: int = 3, stride: int = 2):
    """Valid max pooling and its gradient for dy = 1, routed to the first maximum of each window (row-major)."""
    n, h, w, c = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    grad = np.zeros_like(x)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    window = x[b, i * stride : i * stride + size, j * stride : j * stride + size, ch]
                    k = int(np.argmax(window))  # first maximum in row-major order
                    out[b, i, j, ch] = window.flat[k]
                    grad[b, i * stride + k // size, j * stride + k % size, ch] += 1.0
    return out, grad


@pytest.mark.parametrize("unrolled", [False, True])
def test_overlapping_pooling_matches_numpy_including_ties(unrolled):
    import tensorflow as tf

    from alexnet_tf.layers import OverlappingMaxPooling2D

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(2, 9, 11, 3)).astype("float32")  # small integers: many ties, as after ReLU
    expected, expected_grad = numpy_max_pool(x)
    layer = OverlappingMaxPooling2D()
    layer.unrolled = unrolled
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        y = layer(x_tensor, training=True)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(tape.gradient(y, x_tensor), expected_grad)


def test_overlapping_pooling_is_a_keras_layer():
    from alexnet_tf.layers import OverlappingMaxPooling2D

    x = np.random.default_rng(0).normal(size=(2, 7, 7, 2)).astype("float32")
    check_layer(OverlappingMaxPooling2D, {}, x, numpy_max_pool(x)[0])
