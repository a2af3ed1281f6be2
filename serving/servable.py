"""One loaded version of a model: a TF1 Graph and Session over its SavedModel (the path TF Serving itself takes),
its signatures checked against each request, its warm-up requests replayed, and a count of the requests using it so
that unloading waits for them."""

from __future__ import annotations

import pathlib
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import ServingFailure, clean_message


def variables_precision(meta_graph: tf.compat.v1.MetaGraphDef) -> str:
    """"bfloat16" when a SavedModel's graph holds bfloat16 variables (a `--precision bfloat16` export), else
    "float32"."""
    graph = meta_graph.graph_def
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    bfloat16 = tf.bfloat16.as_datatype_enum
    return "bfloat16" if any(n.op == "VarHandleOp" and n.attr["dtype"].type == bfloat16 for n in nodes) else "float32"


class Servable:
    """One loaded version: a TF1 Graph and Session, its signatures, and a count of requests using it."""

    def __init__(self, name: str, version: int, path: pathlib.Path,
                 config: tf.compat.v1.ConfigProto | None = None, tags: tuple[str, ...] = ("serve",)):
        self.name, self.version, self.path = name, version, path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            with self.graph.as_default():
                self.meta = tf.compat.v1.saved_model.loader.load(self.session, list(tags), str(path))
        except BaseException:
            self.session.close()
            raise
        self.signatures = {k: v for k, v in self.meta.signature_def.items() if not k.startswith("__")}
        self.precision = variables_precision(self.meta)
        self._users, self._retired, self._lock = 0, False, threading.Lock()

    def warm_up(self, iterations: int = 0) -> int:
        """Replay assets.extra/tf_serving_warmup_requests (as TF Serving does at load), each `iterations` times
        (0: once); return how many requests."""
        path = self.path / "assets.extra" / "tf_serving_warmup_requests"
        count = 0
        if path.is_file():
            for record in tf.data.TFRecordDataset(str(path)):
                logged = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                request = logged.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                for _ in range(max(1, iterations)):
                    self.run(request.model_spec.signature_name or "serving_default", inputs)
                count += 1
        return count

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
        """Run a signature on NumPy inputs, checking names, dtypes and shapes against the SignatureDef."""
        feed, outputs = self.check(signature_name, inputs, output_filter)
        try:
            return self.session.run(outputs, feed)
        except tf.errors.InvalidArgumentError as error:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, clean_message(error)) from None
        except tf.errors.ResourceExhaustedError as error:
            raise ServingFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, clean_message(error)) from None
        except tf.errors.OpError as error:
            raise ServingFailure(grpc.StatusCode.INTERNAL, clean_message(error)) from None

    def check(self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()) -> tuple[dict, dict]:
        """(feed, fetches) for a signature, or ServingFailure naming what does not match its SignatureDef."""
        signature_name = signature_name or "serving_default"
        signature = self.signatures.get(signature_name)
        if signature is None:
            raise ServingFailure(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"Serving signature key \"{signature_name}\" not found; the model has "
                                 f"{sorted(self.signatures)}")
        expected, given = set(signature.inputs), set(inputs)
        if expected != given:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"signature {signature_name!r} takes inputs {sorted(expected)}, got {sorted(given)}")
        feed = {}
        for key, info in signature.inputs.items():
            value, dtype = inputs[key], tf.dtypes.as_dtype(info.dtype)
            value = np.asarray(value)
            if dtype == tf.string:
                if value.dtype.kind not in "OS" or any(not isinstance(v, bytes) for v in value.ravel()):
                    raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                         f"input {key!r} must be string (bytes), got {value.dtype}")
                value = value.astype(object)
            elif value.dtype != dtype.as_numpy_dtype:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"input {key!r} must be {dtype.name}, got {value.dtype}")
            dims = [d.size for d in info.tensor_shape.dim]
            if value.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
                shape = [d if d >= 0 else None for d in dims]
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"input {key!r} must have shape {shape}, got {list(value.shape)}")
            if value.ndim and value.shape[0] == 0:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} is an empty batch")
            feed[info.name] = value
        outputs = {k: v.name for k, v in signature.outputs.items() if not output_filter or k in output_filter}
        unknown = set(output_filter) - set(signature.outputs)
        if unknown:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown outputs {unknown}")
        return feed, outputs

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.session.close()

    def retire(self) -> None:
        """No new requests; the session closes when the last running one finishes."""
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.session.close()
