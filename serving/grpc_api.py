"""TF Serving's gRPC API over the shared backend: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), with TF Serving's status codes."""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.backend import Backend
from serving.errors import ServingFailure
from serving.model_config import from_proto
from serving.models import StartupFailure


def _abort(context, failure: ServingFailure):
    context.abort(failure.code, failure.message)


# dtype -> TensorProto's typed field, as TF Serving's Tensor::AsProtoField fills it.
_FIELDS = {tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val", tf.int16: "int_val",
           tf.int8: "int_val", tf.uint8: "int_val", tf.int64: "int64_val", tf.bool: "bool_val",
           tf.string: "string_val", tf.uint32: "uint32_val", tf.uint64: "uint64_val"}


def output_proto(value: np.ndarray, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """An output as TF Serving answers it: the typed repeated field (`float_val`, `string_val`, ...) by default,
    the packed `tensor_content` bytes with --enable_serialization_as_tensor_content=true."""
    proto = tf.make_tensor_proto(value)
    field = _FIELDS.get(tf.as_dtype(proto.dtype))
    if tensor_content or field is None or not proto.tensor_content:
        return proto  # make_tensor_proto packs numbers; strings are always string_val
    typed = tensor_pb2.TensorProto(dtype=proto.dtype, tensor_shape=proto.tensor_shape)
    getattr(typed, field).extend(np.asarray(value).ravel().tolist())
    return typed


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


def _label(spec) -> str | None:
    return spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None


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
                                                           inputs, tuple(request.output_filter), label=_label(spec))
        response = predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = spec.name, signature
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(output_proto(value, self.backend.options.tensor_content))
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be exactly ['signature_def']")
        try:
            version, signature_map = self.backend.metadata(spec.name, _version(spec), _label(spec))
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
        for version, state in states:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            status.status.error_code = state.code.value[0]
            status.status.error_message = state.message
        return response

    def HandleReloadConfigRequest(self, request, context):
        """Apply a new ModelServerConfig, as ServerCore::ReloadConfig: models added load (the answer waits for
        them), dropped ones unload; a config TF Serving refuses leaves the running one, and the RPC fails with its
        code and reason (model_service_impl.cc)."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise ValueError("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                 "ModelConfigList is currently supported")
            self.backend.manager.reload(from_proto(request.config))
        except ValueError as error:
            _abort(context, ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, str(error)))
        except StartupFailure as error:
            _abort(context, ServingFailure(grpc.StatusCode.FAILED_PRECONDITION, str(error)))
        return response
