"""Clients for an AlexNet servable behind TF Serving (or `alexnet-tf serve`): gRPC (`PredictClient`) and REST
(`RestClient`).

A client machine needs only tensorflow-serving-api, grpcio and numpy: this module builds and reads TensorProtos
itself and imports neither Keras nor any model code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2, prediction_service_pb2_grpc

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Channel limit for large batches (probabilities of 1000 classes for hundreds of images, or the images)."""

# What each gRPC status means for a caller of this model, in a sentence.
_STATUS_HELP = {
    grpc.StatusCode.NOT_FOUND: "the server does not serve this model or version",
    grpc.StatusCode.FAILED_PRECONDITION: "the model has no such signature",
    grpc.StatusCode.INVALID_ARGUMENT: "the request was refused: an input is not what the signature takes",
    grpc.StatusCode.UNAVAILABLE: "the server is unreachable or overloaded (retried with backoff)",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the request or answer is larger than a message limit, or the server "
                                        "has too many requests in flight",
    grpc.StatusCode.DEADLINE_EXCEEDED: "no answer within the timeout",
    grpc.StatusCode.UNIMPLEMENTED: "the server does not offer this method",
    grpc.StatusCode.UNAUTHENTICATED: "the server wants credentials (tls=...)",
    grpc.StatusCode.PERMISSION_DENIED: "the server refuses this client",
    grpc.StatusCode.INTERNAL: "the server failed while running the model",
}

_DT_FLOAT, _DT_INT32, _DT_UINT8, _DT_STRING, _DT_INT64 = 1, 3, 4, 7, 9


class ServingError(RuntimeError):
    """A failed request: `code` (a grpc.StatusCode, or the HTTP status for REST) and the server's message."""

    def __init__(self, code, message: str):
        self.code = code
        name = code.name if isinstance(code, grpc.StatusCode) else f"HTTP {code}"
        hint = _STATUS_HELP.get(code, "")
        super().__init__(f"{name}: {message}" + (f" ({hint})" if hint else ""))


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top classes of one image, best first."""

    labels: list[str]
    classes: list[int]
    scores: list[float]

    @property
    def label(self) -> str:
        return self.labels[0]


def string_tensor(values: Sequence[bytes]):
    """A DT_STRING TensorProto of shape [len(values)]."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]),
        string_val=list(values),
    )


def tensor_to_numpy(tensor) -> np.ndarray:
    """A TensorProto (float, int32, int64, uint8 or string) as a NumPy array."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.dtype == _DT_STRING:
        return np.array(list(tensor.string_val), dtype=object).reshape(shape)
    kinds = {_DT_FLOAT: (np.float32, "float_val"), _DT_INT32: (np.int32, "int_val"),
             _DT_UINT8: (np.uint8, "int_val"), _DT_INT64: (np.int64, "int64_val")}
    if tensor.dtype not in kinds:
        raise ValueError(f"cannot read a tensor of dtype enum {tensor.dtype}")
    dtype, field = kinds[tensor.dtype]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    values = np.array(getattr(tensor, field), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    return (np.full(count, values[0], dtype) if len(values) == 1 and count > 1 else values).reshape(shape)


def _predictions(outputs: dict[str, np.ndarray]) -> list[Prediction]:
    labels = [[v.decode() if isinstance(v, bytes) else str(v) for v in row] for row in outputs["labels"]]
    return [Prediction(names, [int(c) for c in k], [float(s) for s in p])
            for names, k, p in zip(labels, outputs["classes"], outputs["scores"])]


class PredictClient:
    """gRPC client of TF Serving's PredictionService for the AlexNet signatures.

    Args:
        target: "host:port" of the gRPC endpoint (8500 by default in TF Serving).
        model_name: the served model's name.
        signature: serving_default (10 crops), center_crop, or from_pixels.
        timeout: seconds per attempt.
        tls: None for plaintext, True for TLS with the system's roots, or grpc.ChannelCredentials.
        retries: further attempts after UNAVAILABLE (only), with exponential backoff.

    Example:

    >>> client = PredictClient("localhost:8500")
    >>> client.predict([open("cat.jpg", "rb").read()])[0].label
    """

    def __init__(self, target: str, model_name: str = "alexnet", *, signature: str = "serving_default",
                 timeout: float = 10.0, tls=None, retries: int = 3, version: int | None = None):
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if tls is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials() if tls is True else tls
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.target, self.model_name, self.signature = target, model_name, signature
        self.timeout, self.retries, self.version = timeout, retries, version

    def _spec(self, signature: str | None = None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature or "")
        if self.version is not None:
            spec.version.value = self.version
        return spec

    def _call(self, method, request):
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ServingError(error.code(), error.details() or "") from None

    def predict_raw(self, inputs: dict, signature: str | None = None) -> dict[str, np.ndarray]:
        """Send TensorProtos by input name; return every output as a NumPy array."""
        request = predict_pb2.PredictRequest(model_spec=self._spec(signature or self.signature))
        for name, tensor in inputs.items():
            request.inputs[name].CopyFrom(tensor)
        response = self._call(self.stub.Predict, request)
        return {name: tensor_to_numpy(tensor) for name, tensor in response.outputs.items()}

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """Top-5 predictions for encoded images (JPEG, PNG, GIF or BMP bytes), one per image."""
        if self.signature == "from_pixels":
            raise ValueError("predict() sends image bytes; call predict_pixels() for the from_pixels signature")
        if not images:
            return []
        return _predictions(self.predict_raw({"image_bytes": string_tensor(list(images))}))

    def predict_pixels(self, images: np.ndarray) -> list[Prediction]:
        """Top-5 predictions for uint8 [batch, 256, 256, 3] RGB images (the from_pixels signature)."""
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

        images = np.ascontiguousarray(images, dtype=np.uint8)
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in images.shape]
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_content=images.tobytes(),
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
        return _predictions(self.predict_raw({"images": tensor}, "from_pixels"))

    def metadata(self) -> dict:
        """The served model's version and signatures: {"version": int, "signatures": {name: {...}}}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._spec(),
                                                                 metadata_field=["signature_def"])
        response = self._call(self.stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        signatures = {
            name: {"inputs": sorted(s.inputs), "outputs": sorted(s.outputs)}
            for name, s in signature_map.signature_def.items()
        }
        return {"version": response.model_spec.version.value, "signatures": signatures}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RestClient:
    """The same predictions over TF Serving's REST API (port 8501), images sent as {"b64": ...}.

    Args:
        url: e.g. "http://localhost:8501".
        model_name, signature, timeout, version, retries: as for PredictClient.
    """

    def __init__(self, url: str, model_name: str = "alexnet", *, signature: str = "serving_default",
                 timeout: float = 10.0, version: int | None = None, retries: int = 3):
        self.url, self.model_name, self.signature = url.rstrip("/"), model_name, signature
        self.timeout, self.version, self.retries = timeout, version, retries

    def _model_url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{version}"

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        delay = 0.2
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code == 503 and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                try:
                    message = json.loads(error.read()).get("error", "")
                except ValueError:
                    message = error.reason
                raise ServingError(error.code, message) from None
            except urllib.error.URLError as error:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ServingError(503, f"cannot reach {self.url}: {error.reason}") from None

    def predict_raw(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Every output of the signature (columnar "inputs" request, "outputs" answer) as NumPy arrays."""
        body = {"signature_name": self.signature,
                "inputs": {"image_bytes": [{"b64": base64.b64encode(image).decode()} for image in images]}}
        outputs = self._request(f"{self._model_url()}:predict", body)["outputs"]
        return {name: np.array(value, dtype=object if name == "labels" else None) for name, value in outputs.items()}

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        if not images:
            return []
        return _predictions(self.predict_raw(images))

    def metadata(self) -> dict:
        answer = self._request(f"{self._model_url()}/metadata")
        signature_def = answer["metadata"]["signature_def"]["signature_def"]
        signatures = {name: {"inputs": sorted(s["inputs"]), "outputs": sorted(s["outputs"])}
                      for name, s in signature_def.items()}
        return {"version": int(answer["model_spec"]["version"]), "signatures": signatures}

    def status(self) -> dict:
        return self._request(self._model_url())
