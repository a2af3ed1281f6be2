"""PaperSGD against the paper's update rule, computed by hand in NumPy."""

import json

import keras
import numpy as np
import pytest

from alexnet_tf.network.optimizer import PaperSGD


def numpy_paper_steps(w, grads, lr, momentum, decay):
    """v <- momentum * v - decay * lr * w - lr * g; w <- w + v (section 5 of the paper)."""
    w = w.astype(np.float64)
    v = np.zeros_like(w)
    trajectory = []
    for g in grads:
        v = momentum * v - decay * lr * w - lr * g
        w = w + v
        trajectory.append(w.copy())
    return trajectory


@pytest.mark.parametrize("strategy", [None, "one-device"], ids=["fused", "under-a-strategy"])
def test_three_steps_match_the_paper_for_a_kernel_and_a_bias(strategy):
    """Both forms of the update: one XLA cluster per variable (no strategy) and the separate ops (replicas)."""
    import contextlib

    import tensorflow as tf

    distribution = tf.distribute.OneDeviceStrategy("/cpu:0") if strategy else None
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    rng = np.random.default_rng(0)
    kernel0 = rng.normal(size=(3, 2)).astype("float32")
    bias0 = rng.normal(size=(2,)).astype("float32")
    grads = [(rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")) for _ in range(3)]
    expected_kernel = numpy_paper_steps(kernel0, [g for g, _ in grads], 0.1, 0.9, 0.05)
    expected_bias = numpy_paper_steps(bias0, [g for _, g in grads], 0.1, 0.9, 0.0)  # biases are not decayed
    with scope:
        kernel, bias = keras.Variable(kernel0), keras.Variable(bias0)
        optimizer = PaperSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.05)  # large decay: visible in 3 steps
        for step, (g_kernel, g_bias) in enumerate(grads):
            step_grads = [tf.constant(g_kernel), tf.constant(g_bias)]
            if distribution:
                distribution.run(optimizer.apply, args=(step_grads, [kernel, bias]))
            else:
                optimizer.apply(step_grads, [kernel, bias])
            np.testing.assert_allclose(kernel.numpy(), expected_kernel[step], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(bias.numpy(), expected_bias[step], rtol=1e-6, atol=1e-6)
    # Not Keras' decoupled SGD(weight_decay=...), which would also shrink the bias.
    keras_bias = keras.Variable(bias0)
    keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05)
    for _, g_bias in grads:
        keras_sgd.apply([g_bias], [keras_bias])
    assert not np.allclose(keras_bias.numpy(), expected_bias[-1], atol=1e-4)


def test_defaults_are_the_papers_and_config_round_trips():
    optimizer = PaperSGD()
    config = optimizer.get_config()
    assert config["learning_rate"] == pytest.approx(0.01)
    assert (config["momentum"], config["weight_decay"]) == (0.9, 5e-4)
    clone = PaperSGD.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, PaperSGD) and revived.coupled_weight_decay == 5e-4


def test_a_learning_rate_schedule_drives_the_step():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])  # step 0: 0.1, then 0.01
    w = keras.Variable(np.ones((2, 2), "float32"))
    optimizer = PaperSGD(schedule, momentum=0.0, weight_decay=0.0)
    optimizer.apply([np.ones((2, 2), "float32")], [w])
    optimizer.apply([np.ones((2, 2), "float32")], [w])
    np.testing.assert_allclose(w.numpy(), 1.0 - 0.1 - 0.01, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"momentum": 1.0}, {"momentum": -0.1}, {"weight_decay": -1e-4},
                                    {"learning_rate": 0.0}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PaperSGD(**kwargs)
