"""Top-k *error* metrics: the paper reports top-1 and top-5 error rates, not accuracies."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="alexnet_tf")
class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """The fraction of examples whose label is not among the k highest scores (integer labels).

    Args:
        k: how many top scores count as a hit (1 and 5 in the paper).
        name: metric name; defaults to `top{k}_error`.
    """

    def __init__(self, k: int = 5, name: str | None = None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}_error", **kwargs)

    def result(self):
        return 1.0 - super().result()
