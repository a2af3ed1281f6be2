"""Streaming statistics against NumPy's mean, cov and eigh on the whole data in memory."""

import numpy as np

from alexnet_tf.data.stats import Stats, StatsAccumulator


def test_streamed_statistics_match_numpy_and_merge(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    images[..., 1] = np.clip(images[..., 0] * 0.5 + 40, 0, 255)  # correlated channels: a non-trivial covariance
    first, second = StatsAccumulator(8), StatsAccumulator(8)
    for image in images[:5]:
        first.add(image)
    for image in images[5:]:
        second.add(image)
    second.save(tmp_path / "partial.npz")
    first.merge(StatsAccumulator.load(tmp_path / "partial.npz"))
    stats = first.finalize()

    np.testing.assert_allclose(stats.mean_image, images.mean(axis=0), rtol=1e-6)
    pixels = images.reshape(-1, 3) / 255.0
    covariance = np.cov(pixels.T, bias=True)
    np.testing.assert_allclose(stats.rgb_covariance, covariance, atol=1e-10)
    eigval, eigvec = np.linalg.eigh(covariance)
    np.testing.assert_allclose(stats.eigval, eigval[::-1], atol=1e-10)
    for i in range(3):  # eigenvectors up to sign
        assert abs(abs(stats.eigvec[:, i] @ eigvec[:, 2 - i]) - 1.0) < 1e-8
    assert stats.count == 12

    stats.save(tmp_path / "stats.npz")
    loaded = Stats.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(loaded.eigvec, stats.eigvec)
    np.testing.assert_allclose(loaded.mean_rgb, images.reshape(-1, 3).mean(axis=0), rtol=1e-5)


def test_imagenet_fallback_has_the_published_values():
    stats = Stats.imagenet()
    assert stats.mean_image.shape == (256, 256, 3)
    np.testing.assert_allclose(stats.mean_rgb, [123.68, 116.78, 103.94], rtol=1e-5)
    np.testing.assert_allclose(stats.eigval, [0.2175, 0.0188, 0.0045])
