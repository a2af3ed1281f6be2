"""TF Serving's REST API over the shared backend: GET /v1/models/NAME[/versions/N][/metadata], POST ...:predict
(row and columnar JSON, binary as {"b64": ...}), Prometheus metrics, and answers (never a dropped connection) for
bodies that are malformed, oversized, short or stalled."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from serving.backend import Backend
from serving.errors import HTTP_STATUS, ServingFailure

log = logging.getLogger("alexnet_tf.serving")

# TF Serving's own patterns (http_rest_api_util.cc: kPredictionApiGegex, kModelStatusApiRegex), case-insensitive.
_ROUTE = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<rest>/metadata|:predict)?", re.IGNORECASE)


def _json_value(value, key: str):
    """A NumPy output as JSON: strings decoded (base64 objects for '*_bytes' outputs, as TF Serving does)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        flat = [{"b64": base64.b64encode(v).decode()} if key.endswith("_bytes") else v.decode("utf-8", "replace")
                for v in value.ravel()]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    return np.asarray(value).tolist()


def _decode_b64(value, depth: int = 0):
    if depth > 64:
        raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "an input is nested more than 64 levels deep")
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "a binary value must be {\"b64\": \"...\"}")
        text = value["b64"]
        try:
            if not isinstance(text, str):
                raise ValueError
            # TF Serving decodes with absl::Base64Unescape, which takes the value with or without its "=" padding.
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "invalid base64 in a b64 value") from None
    if isinstance(value, list):
        return [_decode_b64(v, depth + 1) for v in value]
    return value.encode() if isinstance(value, str) else value


def _to_array(values, info) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(info.dtype)
    values = _decode_b64(values)
    try:
        if dtype == tf.string:
            array = np.empty(len(values), dtype=object) if isinstance(values, list) else None
            if array is None or any(not isinstance(v, bytes) for v in values):
                raise ValueError("expected a list of strings or {\"b64\": ...} values")
            array[:] = values
            return array
        return np.asarray(values, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the input as {dtype.name}: {error}") \
            from None


class RestHandler(http.server.BaseHTTPRequestHandler):
    backend: Backend  # set on the subclass made by `serve`
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # requests are logged by the backend
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if self.backend.draining:  # shutting down: this connection's last answer
            self.close_connection = True
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        if self.backend.options.cors:  # --rest_api_enable_cors_support: TF Serving's AddCORSHeaders
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST, GET")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    counted = False  # set once the backend has counted this request (a predict)

    def _fail(self, failure: ServingFailure) -> None:
        self.code = failure.code.name
        self._send(HTTP_STATUS.get(failure.code, 500), {"error": failure.message})

    def _route(self):
        """(model name, version, label, "" | "/metadata" | ":predict") of the request's path."""
        match = _ROUTE.fullmatch(self.path.split("?")[0])
        if not match:
            raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"no such route: {self.path}")
        version = int(match["version"]) if match["version"] else None
        label = urllib.parse.unquote(match["label"]) if match["label"] else None
        self.model_name = urllib.parse.unquote(match["name"])
        return self.model_name, version, label, (match["rest"] or "").lower()

    def do_GET(self):
        self.model_name, self.code, self.counted = "", "OK", False
        try:
            with self.backend.request():  # counted until answered: a shutdown waits for it
                self._get()
        except ServingFailure as failure:
            self._fail(failure)
        self._count()

    def _count(self) -> None:
        """TF Serving counts every REST request in request_count (a predict is counted by the backend already)."""
        if not self.counted and self.path.split("?")[0] != self.backend.options.monitoring.path:
            self.backend.metrics.count_request(self.model_name, self.code)

    def _get(self):
        monitoring = self.backend.options.monitoring
        if monitoring.enabled and self.path.split("?")[0] == monitoring.path:
            data = self.backend.metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            name, version, label, rest = self._route()
            if rest == "/metadata":
                served, signature_map = self.backend.metadata(name, version, label)
                self._send(200, {
                    "model_spec": {"name": name, "signature_name": "", "version": str(served)},
                    "metadata": {"signature_def": {
                        "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                        **json_format.MessageToDict(signature_map, preserving_proto_field_name=True)}},
                })
            elif rest == "":
                states = self.backend.status(name, version)  # as TF Serving: a label lists every version
                self._send(200, {"model_version_status": [
                    {"version": str(v), "state": state.state,
                     "status": {"error_code": state.code.name, "error_message": state.message}}
                    for v, state in states]})
            else:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "use POST for :predict")
        except ServingFailure as failure:
            self._fail(failure)

    def setup(self):
        super().setup()
        self.connection.settimeout(self.backend.options.rest_timeout)  # a stalled upload cannot hold a thread

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400 / 408 / 413 for a body that cannot be read whole."""
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(400 if "Content-Length" in self.headers else 411,
                       {"error": "a POST needs a non-negative integer Content-Length"})
            return None
        if length > self.backend.options.max_request_bytes:
            self.close_connection = True
            self._send(413, {"error": f"request of {length} bytes exceeds the limit of "
                                      f"{self.backend.options.max_request_bytes}"})
            return None
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._send(408, {"error": f"the body did not arrive within {self.backend.options.rest_timeout:g} s"})
            return None
        if len(data) < length:
            self.close_connection = True
            self._send(400, {"error": f"the body ended after {len(data)} of the {length} bytes of its "
                                      "Content-Length"})
            return None
        return data

    def do_POST(self):
        self.model_name, self.code, self.counted = "", "OK", False
        try:
            with self.backend.request():
                self._post()
        except ServingFailure as failure:
            self._fail(failure)
        except Exception as error:  # noqa: BLE001 - never drop a connection without an answer
            log.exception("REST request failed")
            self.code = "INTERNAL"
            self._send(500, {"error": f"internal error: {type(error).__name__}"})
        self._count()

    def _post(self):
        data = self._read_body()
        if data is None:
            return
        name, version, label, rest = self._route()
        if rest != ":predict":
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 "POST goes to .../NAME[/versions/N | /labels/LABEL]:predict")
        try:
            body = json.loads(data or b"{}")
        except (ValueError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"the body is not JSON: {reason}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 "the body needs exactly one of 'instances' (row format) or 'inputs' (columnar)")
        self._predict(name, version, label, body)

    def _predict(self, name: str, version: int | None, label: str | None, body: dict) -> None:
        signature_name = body.get("signature_name") or "serving_default"
        if not isinstance(signature_name, str):
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "'signature_name' must be a string")
        servable = self.backend.manager.acquire(name, version, label)
        try:
            signature = servable.signatures.get(signature_name)
        finally:
            servable.release()
        if signature is None:
            raise ServingFailure(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"Serving signature key \"{signature_name}\" not found")
        try:
            inputs = self._inputs(signature, body)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:  # a body of the wrong shape
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"cannot read the request's inputs ({type(error).__name__}: {error})") from None
        self.counted = True  # the backend counts a predict, whatever its outcome
        _, _, outputs = self.backend.predict(name, servable.version if label else version, signature_name, inputs,
                                             entrypoint="REST")
        single = len(outputs) == 1  # TF Serving drops the output's name when there is only one (json_tensor.cc)
        if "instances" in body:
            rows = len(next(iter(outputs.values())))
            predictions = [next(iter(row.values())) if single else row for row in
                           ({k: _json_value(v[i], k) for k, v in outputs.items()} for i in range(rows))]
            self._send(200, {"predictions": predictions})
        else:
            columns = {k: _json_value(v, k) for k, v in outputs.items()}
            self._send(200, {"outputs": next(iter(columns.values())) if single else columns})

    @staticmethod
    def _inputs(signature, body: dict) -> dict[str, np.ndarray]:
        """The signature's inputs from a row-format ("instances") or columnar ("inputs") body."""
        signature_name = body.get("signature_name") or "serving_default"
        keys = list(signature.inputs)
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list")
            if all(isinstance(i, dict) and "b64" not in i for i in instances):
                columns = {k: [i.get(k) for i in instances] for k in {k for i in instances for k in i}}
            elif len(keys) == 1:
                columns = {keys[0]: instances}
            else:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"instances must be objects with {keys}")
        else:
            columns = body["inputs"] if isinstance(body["inputs"], dict) else {keys[0]: body["inputs"]}
        unknown = set(columns) - set(keys)
        if unknown:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"signature {signature_name!r} takes inputs {keys}, got {sorted(columns)}")
        return {k: _to_array(v, signature.inputs[k]) for k, v in columns.items()}
