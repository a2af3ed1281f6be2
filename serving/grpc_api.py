"""TF Serving's gRPC API over the shared backend: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), with TF Serving's status codes."""

from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.backend import Backend
from serving.errors import ServingFailure


def _abort(context, failure: ServingFailure):
    context.abort(failure.code, failure.message)


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def Predict(self, request, context):
        try:
            with self.backend.request():  # counted until answered: a shutdown waits for it
                return self._predict(request)
        except ServingFailure as failure:
            _abort(context, failure)

    def _predict(self, request):
        spec = request.model_spec
        inputs = {}
        for key, tensor in request.inputs.items():
            try:
                inputs[key] = tf.make_ndarray(tensor)
            except Exception as error:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"input {key!r} is not a readable TensorProto: {error}") from None
        version, signature, outputs = self.backend.predict(spec.name, _version(spec), spec.signature_name,
                                                           inputs, tuple(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = spec.name, signature
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be exactly ['signature_def']")
        try:
            version, signature_map = self.backend.metadata(spec.name, _version(spec))
        except ServingFailure as failure:
            _abort(context, failure)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        try:
            states = self.backend.status(spec.name, _version(spec))
        except ServingFailure as failure:
            _abort(context, failure)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, message in states:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.error_message = message
            status.status.error_code = 0 if not message else 13
        return response
