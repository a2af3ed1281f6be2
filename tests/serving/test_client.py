"""The client stays light: no Keras and no model code on a client machine; TensorProtos built and read by hand."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

from serving import client
from serving.client import ServingError, string_tensor, tensor_to_numpy


def test_client_imports_no_keras_and_no_model_code():
    # The client's own imports: the standard library, grpc, numpy, tensorflow-serving-api and the TensorProto
    # messages it is built on (tensorflow.core.framework). Those generated protos import the tensorflow package,
    # which pulls in what it pulls in; the client itself calls no TF op and no Keras.
    tree = ast.parse(pathlib.Path(client.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    allowed = {"grpc", "numpy", "tensorflow_serving", "tensorflow.core.framework"}
    foreign = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names
               and not any(m == a or m.startswith(a + ".") for a in allowed)}
    assert not foreign, foreign
    probe = "import sys, serving; print(sorted(m for m in sys.modules if m.split('.')[0] == 'alexnet_tf' " \
            "or m in ('serving.server', 'export')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_tensor_protos_round_trip_against_tensorflow():
    assert tf.make_ndarray(string_tensor([b"a", b"bc"])).tolist() == [b"a", b"bc"]
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[1, 2]], np.int32),
                  np.zeros((2, 2), np.uint8), np.array([b"x", b"y"], dtype=object)):
        np.testing.assert_array_equal(tensor_to_numpy(tf.make_tensor_proto(array)), array)


def test_errors_say_what_the_code_means():
    import grpc

    message = str(ServingError(grpc.StatusCode.NOT_FOUND, "Servable not found"))
    assert message.startswith("NOT_FOUND: Servable not found") and "does not serve this model" in message
