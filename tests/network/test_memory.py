"""One Python process that fits (graph and XLA steps) and predicts with AlexNet after AlexNet gives each one's
memory back (an export traces the same inference path as `predict`).

Inside a traced function, `tf.custom_gradient` registers its gradient in TensorFlow's process-wide registry, and
that entry keeps the traced graph alive, and with it every weight and velocity the graph captured. Keras'
optimizer all-reduce, the LRN's written gradients and the XLA form of max pooling did so at every trace: a
1000-class AlexNet is 233 MB of weights, so each fit kept about 0.6 GB and each predict or export 0.25 GB until
the process ended (a notebook sweep, a server reloading versions, this test suite). `graph_gradient` keeps the
written gradients on their graph instead.
"""

import gc
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet

WEIGHTS_MB = 60_965_224 * 4 / 2**20
"""One 1000-class AlexNet's float32 weights (233 MB): what a process kept per predict, and twice that per fit."""


def resident_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path("/proc/self/status").read_text())[1]) / 1024


def fit_and_predict_one_model() -> None:
    model = build_alexnet(1000)
    images, labels = np.zeros((1, 224, 224, 3), np.float32), np.zeros((1,), np.int64)
    for jit_compile in (False, True):  # the graph path (native LRN, or its XLA-cluster form), then XLA's forms
        model.compile(jit_compile=jit_compile)
        model.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(), steps_per_epoch=1, epochs=1, verbose=0)
    model.predict(images, verbose=0)
    del model
    gc.collect()


@pytest.mark.slow
def test_each_fitted_and_predicted_model_is_freed():
    fit_and_predict_one_model()  # the allocator's pool and TensorFlow's caches reach their working size
    before = resident_mb()
    for _ in range(2):
        fit_and_predict_one_model()
    grown = resident_mb() - before
    # A kept fit holds at least its model's weights and velocities, 2 x WEIGHTS_MB, so two kept models hold 4 x;
    # the allocator's pool may hold up to one fitted model's worth between models (freed: -50 to +250 MB, kept:
    # 1,151 MB with tf.custom_gradient in the XLA forms; AVX-512/bf16 EPYC, 2026-12-06).
    assert grown < 2 * WEIGHTS_MB, f"the process grew by {grown:.0f} MB over two models: they were not freed"
