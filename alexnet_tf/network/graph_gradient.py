"""`custom_gradient`: `tf.custom_gradient` for one tensor in and out, without its process-wide leak.

Inside a traced function, `tf.custom_gradient` registers each use's gradient under a new name in TensorFlow's
gradient registry, which is never emptied: the entry keeps the traced graph alive, and with it every variable the
graph captured (about 0.6 GB for each 1000-class AlexNet fitted with XLA, whose LRN and pooling forms have written
gradients). Here one dispatcher is registered once per process, and each use's gradient is kept on the graph that
holds the op, so it goes when the graph goes. The tape is told of the gradient the same way `tf.custom_gradient`
tells it (`record_operation`); eagerly, `tf.custom_gradient` itself is used (no registry there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf
from tensorflow.python.eager import record  # the tape hook tf.custom_gradient uses (TensorFlow 2.21)

DISPATCHER = "AlexnetTfWrittenGradient"
"""The gradient override name every use shares: it looks the op's gradient up on the op's graph."""
_TABLE = "_alexnet_tf_written_gradients"


def _dispatch(op: tf.Operation, *output_gradients):
    gradient = getattr(op.graph, _TABLE, {}).get(op.name)
    if gradient is None:  # e.g. a graph rebuilt from a GraphDef: the Python function did not travel with it
        raise LookupError(f"{op.name}: its written gradient was made with the graph it was traced in, and this "
                          "graph is a copy; differentiate the original function instead")
    return gradient(*output_gradients)


try:
    tf.RegisterGradient(DISPATCHER)(_dispatch)
except KeyError:  # the module was imported again (importlib.reload): the first registration serves
    pass

Forward = Callable[[tf.Tensor], tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]]


def custom_gradient(f: Forward) -> Callable[[tf.Tensor], tf.Tensor]:
    """Decorate `f(x) -> (y, grad)`, where `grad(dy)` is dL/dx, as `tf.custom_gradient` would (no variables)."""
    eager = tf.custom_gradient(f)

    @functools.wraps(f)
    def apply(x):
        if tf.executing_eagerly():
            return eager(x)
        x = tf.convert_to_tensor(x)
        y, grad = f(x)

        def backward(dy, *unused):  # IdentityN([y, x]): gradients for y (not differentiated through) and x
            return None, grad(dy)

        graph = y.graph
        with graph.gradient_override_map({"IdentityN": DISPATCHER}):
            outputs = tf.identity_n([y, x])
        if not hasattr(graph, _TABLE):
            setattr(graph, _TABLE, {})
        getattr(graph, _TABLE)[outputs[0].op.name] = backward
        record.record_operation(f.__name__, outputs, [y, x], backward)
        return outputs[0]

    return apply
