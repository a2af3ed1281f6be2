"""The native LRN kernels: block and shard edges, bad input, the build cache, a build killed half-way, fallback."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from alexnet_tf.network import lrn, native
from tests.network.test_layers import numpy_lrn, require_native_ops

PAPER = dict(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)


@pytest.fixture(scope="module")
def ops():
    require_native_ops()
    return native.lrn_ops()


def graph_form_and_gradient(a, upstream):
    import tensorflow as tf

    a = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        b = lrn.local_response_normalization(a, *PAPER.values())
    return b.numpy(), tape.gradient(b, a, output_gradients=tf.constant(upstream)).numpy()


@pytest.mark.parametrize("shape", [(3, 37, 41, 48), (1, 1, 1, 5), (2, 7, 130), (2, 3, 600)])
def test_native_ops_match_the_graph_form_across_blocks_and_shards(ops, shape):
    """Row counts that are not multiples of the kernel's block (512 floats: 9 rows of 48 channels, 3 of 130) nor
    of the shards, a row shorter than the window, a row longer than a block, and a rank-3 tensor: the same float32
    values as the graph form, to float32 rounding."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 200, size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    b, grad = graph_form_and_gradient(a, upstream)
    np.testing.assert_allclose(ops.alexnet_lrn(a, **PAPER), b, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ops.alexnet_lrn_grad(a, upstream, **PAPER), grad, rtol=1e-4, atol=1e-6)


def test_native_ops_keep_nans_and_empty_tensors(ops):
    import tensorflow as tf

    a = tf.constant([[1.0, float("nan"), 3.0, 4.0, 5.0, 6.0, 7.0]], tf.bfloat16)
    out = tf.cast(ops.alexnet_lrn(a, **PAPER), tf.float32).numpy()
    assert np.isnan(out[0, :4]).all() and np.isfinite(out[0, 4:]).all()  # the NaN reaches its window only
    assert ops.alexnet_lrn(tf.zeros((0, 4, 4, 8)), **PAPER).shape == (0, 4, 4, 8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_relu_inside_the_native_ops_is_the_lrn_of_the_relu_and_the_masked_gradient(ops, dtype):
    """relu=True reads max(z, 0) and masks the gradient where z <= 0, as tf.nn.relu and ReluGrad do: bitwise the
    ops on NumPy's ReLU (the same float32 values go into the same arithmetic), and within float32 rounding of the
    float64 formula."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    z = rng.normal(scale=100.0, size=(2, 5, 7, 48)).astype("float32")
    z[0, 0, 0, :8] = 0.0  # the ReLU's kink: no gradient, as in ReluGrad
    upstream = rng.normal(size=z.shape).astype("float32")
    z, upstream = (tf.cast(tf.constant(v), dtype) for v in (z, upstream))
    relu = tf.nn.relu(z)
    forward = ops.alexnet_lrn(z, **PAPER, relu=True)
    np.testing.assert_array_equal(forward.numpy(), ops.alexnet_lrn(relu, **PAPER).numpy())
    gradient = ops.alexnet_lrn_grad(z, upstream, **PAPER, relu=True)
    masked = tf.where(z > 0, ops.alexnet_lrn_grad(relu, upstream, **PAPER), tf.zeros_like(z))
    np.testing.assert_array_equal(gradient.numpy(), masked.numpy())
    assert (gradient.numpy()[z.numpy() <= 0] == 0).all() and (gradient.numpy() != 0).mean() > 0.4
    # Against float64: float32 arithmetic (~10 roundings of 2**-24), then the output dtype's rounding (2**-8).
    rtol = 1e-5 if dtype == "float32" else 2.0**-8
    reference = numpy_lrn(np.maximum(tf.cast(z, tf.float64).numpy(), 0))
    np.testing.assert_allclose(tf.cast(forward, tf.float64).numpy(), reference, rtol=rtol, atol=1e-6)


def test_relu_inside_the_native_ops_keeps_nans(ops):
    import tensorflow as tf

    z = tf.constant([[-1.0, float("nan"), -3.0, 4.0, 5.0, 6.0, -7.0]])
    out = ops.alexnet_lrn(z, **PAPER, relu=True).numpy()
    assert np.isnan(out[0, :4]).all() and out[0, 6] == 0 and np.isfinite(out[0, 4:]).all()


def test_native_ops_name_bad_input(ops):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="differs from the upstream gradient"):
        ops.alexnet_lrn_grad(tf.zeros((2, 8)), tf.zeros((2, 9)), **PAPER)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channel axis"):
        ops.alexnet_lrn(tf.constant(1.0), **PAPER)


@pytest.mark.slow
def test_build_reuses_its_cache_and_a_build_killed_half_way_leaves_no_library(tmp_path):
    """Killed while compiling, the build leaves nothing that would be loaded; the next build completes; a second
    call finds the library and compiles nothing."""
    require_native_ops()
    script = f"from alexnet_tf.network import native; native.build(__import__('pathlib').Path({str(tmp_path)!r}))"
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/.build-*/*.o")) and time.monotonic() < deadline:  # one object, no library
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not list(tmp_path.glob("*/alexnet_lrn.so"))
    library = native.build(tmp_path)
    assert library.exists() and library.name == "alexnet_lrn.so"
    built = library.stat().st_mtime_ns
    assert native.build(tmp_path) == library and library.stat().st_mtime_ns == built


def test_without_a_compiler_training_falls_back_to_the_xla_form(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert native.lrn_ops.__wrapped__() is None
    assert "no C++ compiler 'no-such-compiler'" in caplog.text and "XLA form" in caplog.text
    monkeypatch.setenv("ALEXNET_TF_NATIVE_OPS", "0")
    monkeypatch.setenv("CXX", "g++")
    assert native.lrn_ops.__wrapped__() is None


@pytest.mark.slow
def test_a_damaged_cached_library_is_rebuilt(tmp_path):
    """A library truncated on disk (a full disk, a copied cache) is replaced, in a fresh process."""
    require_native_ops()
    probe = textwrap.dedent(f"""
        import os, pathlib
        os.environ["ALEXNET_TF_CACHE"] = {str(tmp_path)!r}
        from alexnet_tf.network import native
        library = native.cache_directory() / native.build_key(native._compiler()) / "alexnet_lrn.so"
        library.parent.mkdir(parents=True)
        library.write_bytes(b"not a library")
        ops = native.lrn_ops()
        print(ops is not None, library.stat().st_size > 1000)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            cwd=pathlib.Path(__file__).parents[2])
    assert result.stdout.split() == ["True", "True"], result.stderr[-2000:]
