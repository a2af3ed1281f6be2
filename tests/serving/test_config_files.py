"""The Dockerfile and TF Serving config files, parsed so that a typo fails CI."""

import json
import pathlib
import re

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_builds_on_pinned_tf_serving_and_passes_the_config():
    instructions = dockerfile_instructions()
    args = {a.split("=")[0]: a.split("=", 1)[1].strip('"') for kind, a in instructions if kind == "ARG" and "=" in a}
    assert re.fullmatch(r"2\.21\.\d+", args["TF_SERVING_VERSION"])  # matches tensorflow-serving-api 2.21
    assert args["VARIANT"] == ""  # --build-arg VARIANT=-gpu gives the GPU image
    assert ("FROM", "tensorflow/serving:${TF_SERVING_VERSION}${VARIANT}") in instructions
    assert ("ENV", "MODEL_NAME=alexnet") in instructions
    copies = [a.split() for kind, a in instructions if kind == "COPY"]
    assert ["${EXPORT_DIR}", "/models/alexnet"] in copies
    config_copy = next(c for c in copies if c[-1] == "/config/")
    for source in config_copy[:-1]:
        assert (ROOT / source).is_file(), source
    cmd = next(a for kind, a in instructions if kind == "CMD")
    flags = json.loads(cmd)  # exec form: a JSON array, appended to the base image's entrypoint
    assert "--enable_batching=true" in flags and "--rest_api_port=8501" in flags
    assert "--enable_grpc_healthcheck_service=true" in flags  # probes developed against alexnet-tf serve work
    for flag in flags:
        name, _, value = flag.partition("=")
        if name.endswith("_file"):
            assert value.startswith("/config/") and (ROOT / "serving" / value.rsplit("/", 1)[1]).is_file()


def test_models_config_parses_as_model_server_config():
    config = text_format.Parse((ROOT / "serving" / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("alexnet", "/models/alexnet", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 2


@pytest.mark.parametrize("versions", [(1,), (3, 7), (2, 5, 9)])
def test_models_config_starts_the_server_whatever_versions_exist(tmp_path, versions):
    """The shipped models.config cannot stop tensorflow_model_server from starting: no label (TF Serving refuses a
    label on a version not yet loaded), a latest policy that takes any versions."""
    from serving.model_config import parse_model_config
    from serving.models import ModelManager
    from tests.serving.tiny_models import write_version

    for version in versions:
        write_version(tmp_path / "alexnet", version)
    text = (ROOT / "serving" / "models.config").read_text().replace("/models/alexnet", str(tmp_path / "alexnet"))
    manager = ModelManager(parse_model_config(text), poll_seconds=0)
    try:
        manager.start()
        assert sorted(manager.models["alexnet"].loaded) == sorted(versions)[-2:]
    finally:
        manager.stop()


def monitoring_config_class():
    """tensorflow.serving.MonitoringConfig, rebuilt from tensorflow_serving/config/monitoring_config.proto (the
    generated module is not shipped in tensorflow-serving-api)."""
    file = descriptor_pb2.FileDescriptorProto(name="monitoring_config.proto", package="tensorflow.serving",
                                              syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig",
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def test_monitoring_config_parses():
    config = text_format.Parse((ROOT / "serving" / "monitoring.config").read_text(), monitoring_config_class()())
    assert config.prometheus_config.enable and config.prometheus_config.path == "/monitoring/prometheus/metrics"


# tensorflow.serving.BatchingParameters is not shipped in tensorflow-serving-api: check names and types.
_WRAPPED_INT = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                "max_execution_batch_size"}
_REPEATED_INT = {"allowed_batch_sizes"}
_WRAPPED_BOOL = {"pad_variable_length_inputs", "enable_large_batch_splitting"}


@pytest.mark.parametrize("name", ["batching.config", "batching_bfloat16.config"])
def test_batching_config_fields_have_the_right_names_and_types(name):
    text = (ROOT / "serving" / name).read_text()
    seen = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        wrapped = re.fullmatch(r"(\w+) \{ value: (\S+) \}", line)
        repeated = re.fullmatch(r"(\w+): (\d+)", line)
        if wrapped and wrapped[1] in _WRAPPED_INT:
            assert int(wrapped[2]) > 0, line
        elif wrapped and wrapped[1] in _WRAPPED_BOOL:
            assert wrapped[2] in ("true", "false"), line
        elif repeated and repeated[1] in _REPEATED_INT:
            assert int(repeated[2]) > 0
        else:
            pytest.fail(f"not a BatchingParameters field of the right type: {line!r}")
        seen.add((wrapped or repeated)[1])
    assert {"max_batch_size", "batch_timeout_micros", "num_batch_threads"} <= seen
    sizes = [int(m) for m in re.findall(r"allowed_batch_sizes: (\d+)", text)]
    max_batch = int(re.search(r"^(?:max_execution_batch_size|max_batch_size) \{ value: (\d+)", text, re.M)[1])
    if sizes:  # optional; when given, TF Serving requires them sorted and the last to equal the max
        assert sizes == sorted(sizes) and sizes[-1] == max_batch
