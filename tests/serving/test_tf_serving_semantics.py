"""Details where the local server answers as tensorflow_model_server does (read from TF Serving's sources:
predict_util.cc, json_tensor.cc, file_system_storage_path_source.cc)."""

import base64
import time

import numpy as np
import pytest
import tensorflow as tf

from serving.backend import ServerOptions
from serving.grpc_api import output_proto
from serving.models import ModelManager
from serving.rest_api import _decode_b64
from serving.server import LocalServer


def test_outputs_use_the_typed_fields_unless_tensor_content_is_asked_for():
    scores = np.array([[0.5, 0.25], [0.125, 0.0625]], np.float32)
    typed = output_proto(scores)
    assert list(typed.float_val) == scores.ravel().tolist() and not typed.tensor_content  # TF Serving's default
    packed = output_proto(scores, tensor_content=True)  # --enable_serialization_as_tensor_content=true
    assert packed.tensor_content and not packed.float_val
    classes = output_proto(np.array([[3, 1]], np.int64))
    assert list(classes.int64_val) == [3, 1]
    labels = output_proto(np.array([[b"star", b"ring"]], object))
    assert list(labels.string_val) == [b"star", b"ring"]
    for proto, value in ((typed, scores), (packed, scores), (classes, [[3, 1]])):
        np.testing.assert_array_equal(tf.make_ndarray(proto), value)


@pytest.mark.parametrize("text", ["aGk=", "aGk", "aGVsbG8hIQ==", "aGVsbG8hIQ"])
def test_base64_with_or_without_padding(text):
    assert _decode_b64({"b64": text}) == base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("text", ["a", "a$bc", 7])
def test_base64_that_is_not_base64_is_invalid_argument(text):
    from serving.errors import ServingFailure

    with pytest.raises(ServingFailure, match="invalid base64"):
        _decode_b64({"b64": text})


def test_poll_zero_looks_once_and_a_negative_poll_never(tmp_path, caplog):
    once = ModelManager("alexnet", tmp_path, poll_seconds=0)
    once.start()
    assert once._thread is None  # looked once (nothing there), no poller
    never = ModelManager("alexnet", tmp_path, poll_seconds=-1)
    never.start()
    assert never._thread is None and "never polled" in caplog.text
    once.stop(), never.stop()


def test_an_idle_server_with_poll_zero_does_not_spin(tmp_path):
    server = LocalServer(tmp_path, options=ServerOptions(port=0, rest_port=None, poll_seconds=0)).start()
    try:
        started = time.process_time()
        time.sleep(2.0)
        used = time.process_time() - started
    finally:
        server.stop(grace=1)
    assert used < 0.5, f"{used:.2f} CPU-seconds in 2 s idle"  # a spinning health watcher took a whole core
