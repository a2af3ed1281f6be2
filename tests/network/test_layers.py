"""LocalResponseNormalization against a NumPy transcription of the paper's formula (section 3.3)."""

import numpy as np
import pytest

from alexnet_tf import LocalResponseNormalization
from tests.helpers import check_layer


def training_call_and_gradient(layer, x: np.ndarray, upstream: np.ndarray | None = None, *, jit: bool = True,
                               training: bool = True):
    """The layer's output (training mode by default) and d(sum(upstream * output))/dx (upstream defaults to ones)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit)
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y if upstream is None else y * upstream)
        return y, tape.gradient(loss, x)

    return run(tf.constant(x))


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


def test_cross_tower_lrn_normalises_both_towers_as_one_stack():
    """Caffe's LRN (bvlc_alexnet) sees the 96 channels of both towers: the windows at the boundary mix them."""
    from alexnet_tf.network.layers import CrossTowerLocalResponseNormalization

    rng = np.random.default_rng(2)
    a, b = (rng.uniform(0, 300, size=(2, 3, 3, 6)).astype("float32") for _ in range(2))
    layer = CrossTowerLocalResponseNormalization(bias=1.0, alpha=2e-5)
    out_a, out_b = layer([a, b])
    both = numpy_lrn(np.concatenate([a, b], axis=-1), k=1.0, alpha=2e-5)
    np.testing.assert_allclose(out_a, both[..., :6], rtol=1e-5)
    np.testing.assert_allclose(out_b, both[..., 6:], rtol=1e-5)
    assert not np.allclose(out_a[..., -1], numpy_lrn(a, k=1.0, alpha=2e-5)[..., -1], rtol=1e-3)  # B reached in


def test_computes_in_float32_under_float16():
    # 300^2 * 5 overflows nothing in float32 but the float16 sum of squares (65504 max) would be inf.
    x = np.full((1, 1, 1, 5), 300.0, "float32")
    out = LocalResponseNormalization(dtype="mixed_float16")(x)
    assert np.all(np.isfinite(np.asarray(out, "float32")))
    np.testing.assert_allclose(np.asarray(out, "float32"), numpy_lrn(x), rtol=1e-3)


def numpy_lrn_gradient(a: np.ndarray, upstream: np.ndarray, eps: float = 1e-3, **kwargs) -> np.ndarray:
    """d(sum(upstream * lrn(a)))/da by central differences of `numpy_lrn` in float64."""
    a = a.astype(np.float64)
    grad = np.empty_like(a)
    for index in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = np.sum(upstream * (numpy_lrn(plus, **kwargs) - numpy_lrn(minus, **kwargs))) / (2 * eps)
    return grad


LRN_FORMS = {  # name: (use_xla_form, jit, training, native)
    "band-matmul-graph": (False, False, False, True),  # inference and exports
    "native-op-graph": (False, False, True, True),  # training steps without XLA: one C++ op each way
    "fused-clusters-graph": (False, False, True, False),  # the same where the native op cannot be built
    "slices-xla": (True, True, True, True),  # training steps compiled with XLA
}


@pytest.fixture
def lrn_form(monkeypatch):
    """Selects a form by name: the native ops required (built here), or switched off for the fused form."""
    from alexnet_tf.network import native

    def select(form: str):
        use_xla_form, jit, training, use_native = LRN_FORMS[form]
        if not use_native:
            monkeypatch.setattr(native, "lrn_ops", lambda: None)
        elif form == "native-op-graph":
            require_native_ops()
        return use_xla_form, jit, training

    return select


def require_native_ops():
    """The native kernels must build on every test machine (g++ is part of the set-up), unless switched off."""
    import os

    from alexnet_tf.network import native

    if os.environ.get("ALEXNET_TF_NATIVE_OPS") == "0":
        pytest.skip("ALEXNET_TF_NATIVE_OPS=0: the native LRN kernels are switched off")
    assert native.lrn_ops() is not None, "the native LRN kernels did not build (see the warning logged)"


@pytest.mark.parametrize("form", LRN_FORMS)
@pytest.mark.parametrize("kwargs, numpy_kwargs", [
    ({}, {}),  # the paper's constants: beta = 0.75 takes the rsqrt path
    ({"bias": 1.0, "alpha": 2e-5}, {"k": 1.0, "alpha": 2e-5}),
    ({"depth_radius": 1, "beta": 0.5}, {"n": 3, "beta": 0.5}),  # rsqrt alone
    ({"beta": 0.6}, {"beta": 0.6}),  # pow
])
def test_every_form_of_lrn_and_its_gradient_match_numpy(kwargs, numpy_kwargs, form, lrn_form):
    """The graph form (band-matrix matmul), the native and fused training forms and the XLA form (shifted slices)
    against the formula and its numerical derivative; 7 channels, so every window the channel edges cut short is
    checked."""
    use_xla_form, jit, training = lrn_form(form)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 200, size=(1, 2, 2, 7)).astype("float32")  # large enough that alpha * sum matters
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = LocalResponseNormalization(**kwargs)
    layer.use_xla_form = use_xla_form
    y, grad = training_call_and_gradient(layer, x, upstream, jit=jit, training=training)
    np.testing.assert_allclose(y, numpy_lrn(x, **numpy_kwargs), rtol=1e-5)
    np.testing.assert_allclose(grad, numpy_lrn_gradient(x, upstream, **numpy_kwargs), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("form", ["native-op-graph", "fused-clusters-graph"])
def test_training_forms_under_mixed_bfloat16_are_the_float32_formula_rounded_once(form, lrn_form):
    """bfloat16 in and out, float32 inside: each training form and the graph form (cast to float32, compute,
    cast back) differ only by float32 rounding before the last rounding to bfloat16, so by at most one bfloat16 ulp
    (2**-7 relative) of the output; the gradient also by float32 rounding of its two terms before they cancel."""
    import tensorflow as tf

    lrn_form(form)
    rng = np.random.default_rng(5)
    x = tf.cast(rng.uniform(0, 200, size=(2, 3, 3, 48)).astype("float32"), tf.bfloat16)
    upstream = tf.cast(rng.normal(size=x.shape).astype("float32"), tf.bfloat16)
    layer = LocalResponseNormalization(dtype="mixed_bfloat16")
    results = {}
    for training in (False, True):
        @tf.function
        def run(x, training=training):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=training)
            return y, tape.gradient(y, x, output_gradients=upstream)

        y, grad = run(x)
        assert y.dtype == grad.dtype == tf.bfloat16
        results[training] = (np.asarray(tf.cast(y, tf.float32)), np.asarray(tf.cast(grad, tf.float32)))
    (y_graph, grad_graph), (y_fused, grad_fused) = results[False], results[True]
    ulp = 2.0 ** -7
    np.testing.assert_array_less(np.abs(y_fused - y_graph), ulp * np.abs(y_graph) + 1e-30)
    a, g = np.asarray(tf.cast(x, tf.float32)), np.asarray(tf.cast(upstream, tf.float32))
    scale = (2.0 + 1e-4 * numpy_window_sum(a * a)) ** -0.75
    terms = np.abs(g * scale) + 1.5e-4 * np.abs(a * numpy_window_sum(np.abs(g * a * scale ** (7 / 3))))
    np.testing.assert_array_less(np.abs(grad_fused - grad_graph), ulp * np.abs(grad_graph) + 1e-5 * terms)


def numpy_window_sum(x: np.ndarray, radius: int = 2) -> np.ndarray:
    """sum over the channel window |i - j| <= radius, zero beyond the edges."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)])
    return sum(padded[..., shift : shift + x.shape[-1]] for shift in range(2 * radius + 1))


def test_band_matrix_sums_each_channel_window():
    from alexnet_tf.network.lrn import band_matrix

    expected = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], np.float32)
    np.testing.assert_array_equal(band_matrix(4, 1), expected)


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


def _pool_and_gradient(x: np.ndarray, *, use_xla_form: bool, jit: bool, size: int = 3, stride: int = 2):
    """The pooling layer's training-mode output and d(sum of outputs)/dx, eagerly or XLA-compiled."""
    from alexnet_tf.network.layers import OverlappingMaxPooling2D

    layer = OverlappingMaxPooling2D(size, stride)
    layer.use_xla_form = use_xla_form
    return training_call_and_gradient(layer, x, jit=jit)


@pytest.mark.parametrize("use_xla_form, jit", [(False, False), (True, False), (True, True)])
def test_overlapping_pooling_matches_numpy_including_ties(use_xla_form, jit):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(2, 9, 11, 3)).astype("float32")  # small integers: many ties, as after ReLU
    expected, expected_grad = numpy_max_pool(x)
    y, grad = _pool_and_gradient(x, use_xla_form=use_xla_form, jit=jit)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.parametrize("shape, size, stride", [
    ((2, 55, 55, 4), 3, 2),  # conv1's maps: odd side, the last row and column in one window only
    ((1, 8, 10, 2), 3, 2),  # even sides: the last row and column in no window
    ((1, 9, 9, 2), 3, 1),
    ((1, 10, 10, 2), 2, 2),  # non-overlapping
    ((1, 12, 12, 2), 2, 3),  # gaps between windows: some inputs get no gradient
])
def test_xla_form_of_pooling_matches_numpy_for_negative_values_and_other_windows(shape, size, stride):
    rng = np.random.default_rng(1)
    x = (rng.integers(-3, 3, size=shape) * 0.5).astype("float32")  # negatives, zeros and ties
    x[0, :3, :3, 0] = -1.0
    x[0, 0, 0, 0], x[0, 2, 2, 0] = -0.0, 0.0  # a -0.0 / +0.0 tie: the first (-0.0) takes the gradient
    expected, expected_grad = numpy_max_pool(x, size, stride)
    y, grad = _pool_and_gradient(x, use_xla_form=True, jit=True, size=size, stride=stride)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(grad, expected_grad)


def test_overlapping_pooling_is_a_keras_layer():
    from alexnet_tf.network.layers import OverlappingMaxPooling2D

    x = np.random.default_rng(0).normal(size=(2, 7, 7, 2)).astype("float32")
    check_layer(OverlappingMaxPooling2D, {}, x, numpy_max_pool(x)[0])
