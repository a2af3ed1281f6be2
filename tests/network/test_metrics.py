"""Top-k error against a NumPy argsort."""

import numpy as np

from alexnet_tf.network.metrics import TopKError


def test_top1_and_top5_error_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 10)).astype("float32")
    labels = rng.integers(0, 10, 64)
    ranks = np.argsort(-logits, axis=1)
    for k in (1, 5):
        metric = TopKError(k)
        metric.update_state(labels, logits)
        expected = 1.0 - np.mean([labels[i] in ranks[i, :k] for i in range(64)])
        np.testing.assert_allclose(float(metric.result()), expected, atol=1e-6)
        assert metric.name == f"top{k}_error"
