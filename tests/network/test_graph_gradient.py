"""`graph_gradient.custom_gradient`: the written gradient is the one used on every path TensorFlow differentiates
by (eager tape, a tape inside a traced function, symbolic `tf.gradients`, a traced function differentiated from
outside), and the traced graph is freed with its function, unlike `tf.custom_gradient`'s."""

import gc
import weakref

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.network.graph_gradient import custom_gradient


@custom_gradient
def square_with_marked_gradient(x):
    """x^2 whose written gradient is 3 * dy (autodiff's would be 2 * x * dy): which one ran is visible."""

    def grad(dy):
        return 3.0 * dy

    return x * x, grad


X = np.array([1.0, -2.0, 4.0], np.float32)
WRITTEN = np.full(3, 3.0, np.float32)


def test_eager_tape_uses_the_written_gradient():
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = square_with_marked_gradient(x)
    np.testing.assert_array_equal(y.numpy(), X * X)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), WRITTEN)


def test_a_tape_inside_a_traced_function_uses_it():
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = square_with_marked_gradient(x)
        return y, tape.gradient(y, x)

    y, grad = step(tf.constant(X))
    np.testing.assert_array_equal(y.numpy(), X * X)
    np.testing.assert_array_equal(grad.numpy(), WRITTEN)


def test_symbolic_gradients_and_a_function_differentiated_from_outside_use_it():
    @tf.function
    def symbolic(x):
        return tf.gradients(square_with_marked_gradient(x), x)[0]

    np.testing.assert_array_equal(symbolic(tf.constant(X)).numpy(), WRITTEN)

    inner = tf.function(square_with_marked_gradient)
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = inner(x)  # one call op: its backward function is built from the traced graph's gradients
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), WRITTEN)


def test_the_traced_graph_is_freed_with_its_function():
    def traced_graph(decorate):
        f = decorate(lambda x: (x * x, lambda dy: 3.0 * dy))
        step = tf.function(lambda x: f(x))
        graph = step.get_concrete_function(tf.TensorSpec([3], tf.float32)).graph
        return weakref.ref(graph)

    ours = traced_graph(custom_gradient)
    theirs = traced_graph(tf.custom_gradient)
    gc.collect()
    assert ours() is None, "graph_gradient kept the traced graph alive"
    assert theirs() is not None  # tf.custom_gradient's registry entry keeps it: why this module exists


def test_a_copied_graph_says_where_its_gradient_went():
    step = tf.function(lambda x: square_with_marked_gradient(x))
    graph_def = step.get_concrete_function(tf.TensorSpec([3], tf.float32)).graph.as_graph_def()
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [3], name="x")
        (y,) = tf.graph_util.import_graph_def(graph_def, input_map={"x:0": x}, return_elements=["Identity:0"])
        with pytest.raises(LookupError, match="its written gradient was made with the graph it was traced in"):
            tf.gradients(y, x)
