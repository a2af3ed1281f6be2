"""Where the local server answers as tensorflow_model_server does (read from TF Serving's sources: main.cc,
server.cc, server_core.cc, availability_preserving_policy.cc, get_model_status_impl.cc, http_rest_api_util.cc,
json_tensor.cc, prediction_service_impl.cc), driven with raw tensorflow-serving-api stubs and plain HTTP over
small SavedModels that answer with their own version number."""

import base64
import concurrent.futures
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from alexnet_tf.cli import tf_serving_flags
from alexnet_tf.cli.common import UserError
from serving.backend import ServerOptions
from serving.batching import BatchingParameters
from serving.grpc_api import output_proto
from serving.model_config import ModelConfig, parse_model_config
from serving.models import LoadPolicy, ModelManager, StartupFailure
from serving.rest_api import _decode_b64
from serving.server import LocalServer
from tests.conftest import ROOT
from tests.serving.tiny_models import write_broken_version, write_version

QUICK = LoadPolicy(max_num_load_retries=1, load_retry_interval=0.05)


def start(tmp_path, models=None, *, base_versions=(1,), **options) -> LocalServer:
    """A LocalServer on free ports over tiny models: by default one model "tiny" with `base_versions`."""
    if models is None:
        for version in base_versions:
            write_version(tmp_path / "tiny", version)
        models = [ModelConfig("tiny", tmp_path / "tiny")]
    options = ServerOptions(port=0, rest_port=0, poll_seconds=options.pop("poll_seconds", 0.2),
                            load=options.pop("load", QUICK), **options)
    return LocalServer(options=options, models=models).start()


def predict(server, name="tiny", version=None, label=None, x=(1.0, 2.0), timeout=30):
    """(version that answered, y) from a raw Predict."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
    return reply.model_spec.version.value, list(reply.outputs["y"].float_val), reply


def grpc_code(call) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name + ": " + error.details()
    return "OK"


def http(server, path, body=None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}",
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def status(server, name="tiny", version=None) -> list[tuple[int, str, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
             s.status.error_message) for s in reply.model_version_status]


def wait_for(condition, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


LABELLED = """
model_config_list {{ config {{
  name: "tiny" base_path: "{base}" model_platform: "tensorflow"
  model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
  version_labels {{ key: "stable" value: 1 }}
  version_labels {{ key: "canary" value: 2 }}
}} }}
"""


# -- versions and labels --------------------------------------------------------------------------------------


def test_latest_one_is_the_default_policy_and_other_versions_are_not_found(tmp_path):
    server = start(tmp_path, base_versions=(1, 2, 3))
    try:
        assert predict(server)[:2] == (3, [3.0, 6.0])
        assert grpc_code(lambda: predict(server, version=2)) == \
            "NOT_FOUND: Servable not found for request: Specific(tiny, 2)"
        assert status(server) == [(3, "AVAILABLE", "")]  # only aspired versions are ever seen
    finally:
        server.stop(grace=1)


def test_specific_versions_and_labels_over_grpc_and_rest(tmp_path):
    for version in (1, 2, 3):
        write_version(tmp_path / "tiny", version)
    models = parse_model_config(LABELLED.format(base=tmp_path / "tiny"))
    server = start(tmp_path, models, load=LoadPolicy(allow_labels_for_unavailable=True))
    try:
        assert predict(server, version=1)[:2] == (1, [1.0, 2.0])
        assert predict(server, label="stable")[0] == 1 and predict(server, label="canary")[0] == 2
        assert predict(server)[0] == 2  # latest of the specific ones; 3 is not loaded
        assert grpc_code(lambda: predict(server, version=3)).startswith("NOT_FOUND")
        assert grpc_code(lambda: predict(server, label="nope")) == \
            "INVALID_ARGUMENT: Unrecognized servable version label: nope"
        code, body = http(server, "/v1/models/tiny/labels/stable:predict", {"instances": [4.0]})
        assert code == 200 and body["predictions"] == [{"y": 4.0, "version": 1}]
        code, body = http(server, "/v1/models/tiny/versions/2:predict", {"inputs": {"x": [4.0]}})
        assert code == 200 and body["outputs"] == {"y": [8.0], "version": [2]}
        code, body = http(server, "/v1/models/tiny/labels/canary/metadata")
        assert code == 200 and body["model_spec"]["version"] == "2"
        code, body = http(server, "/v1/models/tiny/labels/nope:predict", {"instances": [4.0]})
        assert code == 400 and body["error"] == "Unrecognized servable version label: nope"
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name, request.model_spec.version_label = "tiny", "stable"
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
        assert reply.model_spec.version.value == 1
        assert status(server) == [(2, "AVAILABLE", ""), (1, "AVAILABLE", "")]  # highest first, as TF Serving
        code, body = http(server, "/v1/models/tiny")
        assert [(s["version"], s["state"], s["status"]["error_code"]) for s in body["model_version_status"]] == \
            [("2", "AVAILABLE", "OK"), ("1", "AVAILABLE", "OK")]
    finally:
        server.stop(grace=1)


def test_labels_at_start_need_the_flag_and_later_only_name_available_versions(tmp_path):
    write_version(tmp_path / "tiny", 1)
    write_version(tmp_path / "tiny", 2)
    models = parse_model_config(LABELLED.format(base=tmp_path / "tiny"))
    with pytest.raises(StartupFailure, match="assign label to version [12] of model tiny, which is not currently "
                                             "available for inference"):
        start(tmp_path, models)  # nothing is available before the first load: TF Serving refuses to start
    unlabelled = [ModelConfig("tiny", tmp_path / "tiny", "specific", versions=frozenset({1, 2}))]
    server = start(tmp_path, unlabelled)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # both available now: labels taken
            reload = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest
            reload(model_management_pb2.ReloadConfigRequest(config=text_format.Parse(
                LABELLED.format(base=tmp_path / "tiny"), model_server_config_pb2.ModelServerConfig())), timeout=30)
        assert predict(server, label="stable")[0] == 1
        moved = [ModelConfig("tiny", tmp_path / "tiny", "specific", versions=frozenset({1, 2}),
                             labels=(("stable", 3),))]
        with pytest.raises(StartupFailure, match="version 3 of model tiny"):
            server.manager.reload(moved)
        assert predict(server, label="stable")[0] == 1  # the running config is kept
    finally:
        server.stop(grace=1)


def test_a_label_on_a_missing_version_stops_the_command_at_start(tmp_path):
    write_version(tmp_path / "tiny", 1)
    config = tmp_path / "models.config"
    config.write_text(LABELLED.format(base=tmp_path / "tiny"))
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.cli", "serve", f"--model_config_file={config}",
                             "--port=0", "--grpc_socket_path=" + str(tmp_path / "sock"), "--rest_api_port=0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not currently available for inference" in result.stderr


def test_relative_base_paths_and_repeated_models_are_refused_as_tf_serving_does():
    with pytest.raises(ValueError, match="absolute path"):
        parse_model_config('model_config_list { config { name: "a" base_path: "models/a" } }')
    with pytest.raises(ValueError, match="multiple times"):
        parse_model_config('model_config_list { config { name: "a" base_path: "/a" } '
                           'config { name: "a" base_path: "/b" } }')


# -- several models, config reload, retries, roll-back ---------------------------------------------------------


def test_two_models_and_a_config_file_reload(tmp_path):
    for name, version in (("a", 1), ("b", 2), ("c", 3)):
        write_version(tmp_path / name, version)
    config = tmp_path / "models.config"

    def write(names):
        text = "model_config_list {" + "".join(
            f' config {{ name: "{n}" base_path: "{tmp_path / n}" model_platform: "tensorflow" }}' for n in names)
        config.write_text(text + " }")

    write(["a", "b"])
    options = ServerOptions(port=0, rest_port=0, poll_seconds=0.2, config_poll_seconds=0.2, load=QUICK)
    from serving.model_config import read_model_config

    server = LocalServer(options=options, models=read_model_config(config), config_file=config).start()
    try:
        assert predict(server, "a")[0] == 1 and predict(server, "b")[0] == 2
        assert grpc_code(lambda: predict(server, "c")) == "NOT_FOUND: Servable not found for request: Latest(c)"
        write(["a", "c"])
        wait_for(lambda: grpc_code(lambda: predict(server, "c")) == "OK", what="model c after the reload")
        assert grpc_code(lambda: predict(server, "b")).startswith("NOT_FOUND")
        assert status(server, "b") == [(2, "END", "")]  # unloaded, as TF Serving reports it
        config.write_text("model_config_list { this is not a config")  # logged, the running config kept
        time.sleep(0.6)
        assert predict(server, "a")[0] == 1 and predict(server, "c")[0] == 3
    finally:
        server.stop(grace=1)


def test_a_version_that_fails_is_retried_then_reported_and_the_old_one_keeps_serving(tmp_path, caplog):
    server = start(tmp_path, load=LoadPolicy(max_num_load_retries=2, load_retry_interval=0.05))
    try:
        write_broken_version(tmp_path / "tiny", 2)
        wait_for(lambda: status(server)[0][1] == "END", what="version 2 to end in error")
        (version, state, message), (old, old_state, _) = status(server)
        assert (version, state, old, old_state) == (2, "END", 1, "AVAILABLE") and message
        assert caplog.text.count("loading version 2 of tiny failed") == 3  # the first try and 2 retries
        assert predict(server)[0] == 1
        assert http(server, "/v1/models/tiny/versions/2")[1]["model_version_status"][0]["status"]["error_code"] \
            != "OK"
    finally:
        server.stop(grace=1)


def test_a_model_none_of_whose_versions_loads_stops_start_up(tmp_path):
    write_broken_version(tmp_path / "tiny", 1)
    with pytest.raises(StartupFailure, match="1 model.s. did not become available"):
        start(tmp_path, [ModelConfig("tiny", tmp_path / "tiny")])


def test_deleting_the_newest_version_rolls_back(tmp_path):
    server = start(tmp_path, base_versions=(1, 2))
    try:
        assert predict(server)[0] == 2
        shutil.rmtree(tmp_path / "tiny" / "2")
        wait_for(lambda: predict(server)[0] == 1, what="the roll-back to version 1")
        wait_for(lambda: status(server) == [(2, "END", ""), (1, "AVAILABLE", "")], what="version 2 unloaded")
    finally:
        server.stop(grace=1)


def test_poll_zero_looks_once_and_a_negative_poll_never(tmp_path, caplog):
    write_version(tmp_path / "tiny", 1)
    once = ModelManager([ModelConfig("tiny", tmp_path / "tiny")], poll_seconds=0)
    once.start()
    assert sorted(once.models["tiny"].loaded) == [1] and not once._threads  # looked once, no poller
    never = ModelManager([ModelConfig("tiny", tmp_path / "tiny")], poll_seconds=-1)
    never.start()
    assert not never.models["tiny"].loaded and "never polled" in caplog.text
    once.stop(), never.stop()


def test_an_idle_server_with_poll_zero_does_not_spin(tmp_path):
    server = LocalServer(tmp_path, options=ServerOptions(port=0, rest_port=None, poll_seconds=0)).start()
    try:
        started = time.process_time()
        time.sleep(2.0)
        used = time.process_time() - started
    finally:
        server.stop(grace=1)
    assert used < 0.5, f"{used:.2f} CPU-seconds in 2 s idle"  # a spinning poller or watcher takes a whole core


def test_a_rollover_and_a_broken_version_under_16_clients_lose_nothing(tmp_path):
    """16 clients send all the time (batching on) while version 2 is published (written under a temporary name,
    renamed), then a broken version 3: no request fails, version 2 answers within the poll interval (plus its
    load), version 1 is unloaded, and version 3's error shows in the status while version 2 keeps serving."""
    server = start(tmp_path, poll_seconds=0.2, batching=BatchingParameters(
        max_batch_size=8, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=64))
    stop, seen, errors = threading.Event(), [], []

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
            while not stop.is_set():
                try:
                    reply = stub.Predict(request, timeout=30)
                    seen.append((time.monotonic(), reply.model_spec.version.value,
                                 reply.outputs["y"].float_val[0]))
                except grpc.RpcError as error:
                    errors.append(error.code().name)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in range(16):
            pool.submit(client)
        try:
            wait_for(lambda: len(seen) > 50, what="the clients' first answers")
            write_version(tmp_path / "tiny", 2)  # temporary name, then rename
            published = time.monotonic()
            wait_for(lambda: seen[-1][1] == 2, what="answers from version 2")
            switched = next(t for t, v, _ in seen if v == 2 and t > published) - published
            wait_for(lambda: (1, "END", "") in status(server), what="version 1 unloaded")
            write_broken_version(tmp_path / "tiny", 3)
            wait_for(lambda: status(server)[0][:2] == (3, "END"), what="version 3's error")
            count = len(seen)
            wait_for(lambda: len(seen) > count + 50, what="answers after the broken version")
        finally:
            stop.set()
    server.stop(grace=1)
    assert errors == []
    assert all(y == float(v) for _, v, y in seen)  # every answer from one whole version
    assert seen[-1][1] == 2 and switched < 5.0, switched


# -- answers: typed fields, single outputs, base64 --------------------------------------------------------------


def test_outputs_use_the_typed_fields_unless_tensor_content_is_asked_for(tmp_path):
    scores = np.array([[0.5, 0.25], [0.125, 0.0625]], np.float32)
    typed = output_proto(scores)
    assert list(typed.float_val) == scores.ravel().tolist() and not typed.tensor_content  # TF Serving's default
    packed = output_proto(scores, tensor_content=True)  # --enable_serialization_as_tensor_content=true
    assert packed.tensor_content and not packed.float_val
    assert list(output_proto(np.array([[3, 1]], np.int64)).int64_val) == [3, 1]
    assert list(output_proto(np.array([[b"star", b"ring"]], object)).string_val) == [b"star", b"ring"]
    for proto, value in ((typed, scores), (packed, scores)):
        np.testing.assert_array_equal(tf.make_ndarray(proto), value)
    write_version(tmp_path / "tiny", 1)
    for tensor_content in (False, True):
        server = start(tmp_path, [ModelConfig("tiny", tmp_path / "tiny")], tensor_content=tensor_content)
        try:
            reply = predict(server)[2]
            assert bool(reply.outputs["y"].tensor_content) == tensor_content
            assert bool(reply.outputs["version"].int64_val) != tensor_content
            np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]), [1.0, 2.0])
        finally:
            server.stop(grace=1)


@pytest.mark.parametrize("text", ["aGk=", "aGk", "aGVsbG8hIQ==", "aGVsbG8hIQ"])
def test_base64_with_or_without_padding(text):
    assert _decode_b64({"b64": text}) == base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("text", ["a", "a$bc", 7])
def test_base64_that_is_not_base64_is_invalid_argument(text):
    from serving.errors import ServingFailure

    with pytest.raises(ServingFailure, match="invalid base64"):
        _decode_b64({"b64": text})


# -- health, metrics ----------------------------------------------------------------------------------------------


def test_health_is_off_by_default_and_on_with_the_flag_for_tf_servings_service_names(tmp_path):
    def check(server, service):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return grpc_code(lambda: check.replies.append(
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status))

    check.replies = []
    server = start(tmp_path)
    try:
        assert check(server, "").startswith("UNIMPLEMENTED")  # TF Serving without the flag
    finally:
        server.stop(grace=1)
    server = start(tmp_path, [ModelConfig("tiny", tmp_path / "tiny")], grpc_health=True)
    try:
        for service in ("", "ModelService", "PredictionService"):
            assert check(server, service) == "OK"
        assert check.replies == [health_pb2.HealthCheckResponse.SERVING] * 3
        assert check(server, "tensorflow.serving.PredictionService").startswith("NOT_FOUND")
    finally:
        server.stop(grace=1)


def test_request_count_counts_as_tf_serving_and_input_batch_size_each_request(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    server = start(tmp_path, batching=BatchingParameters(max_batch_size=8, batch_timeout_micros=1000))
    try:
        predict(server, x=(1.0, 2.0, 3.0))
        predict(server, x=(1.0,))
        assert grpc_code(lambda: predict(server, version=9)).startswith("NOT_FOUND")
        status(server)  # gRPC GetModelStatus / GetModelMetadata: not counted by TF Serving
        http(server, "/v1/models/tiny")  # every REST request is
        http(server, "/v1/models/tiny/metadata")
        http(server, "/v1/models/tiny/versions/7")
        http(server, "/v1/models/tiny:predict", {"instances": [1.0]})
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics") as reply:
            metrics = {family.name: {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                                     for sample in family.samples}
                       for family in text_string_to_metric_families(reply.read().decode())}
    finally:
        server.stop(grace=1)
    counts = {labels: value for (name, labels), value in metrics[":tensorflow:serving:request_count"].items()
              if name.endswith("_total") or name == ":tensorflow:serving:request_count"}
    assert counts == {(("model_name", "tiny"), ("status", "OK")): 5,
                      (("model_name", "tiny"), ("status", "NOT_FOUND")): 2}
    sizes = metrics[":tensorflow:serving:batching_session:input_batch_size"]
    count = next(v for (name, _), v in sizes.items() if name.endswith("_count"))
    total = next(v for (name, _), v in sizes.items() if name.endswith("_sum"))
    assert (count, total) == (3, 5)  # the three predictions' own sizes 3, 1 and 1, not their batches'


# -- flags ----------------------------------------------------------------------------------------------------------

MAIN_CC_FLAGS = """port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms
rest_api_enable_cors_support enable_batching allow_version_labels_for_unavailable_models batching_parameters_file
enable_per_model_batching_parameters model_config_file model_config_file_poll_wait_seconds model_name model_base_path
num_load_threads num_unload_threads max_num_load_retries load_retry_interval_micros file_system_poll_wait_seconds
flush_filesystem_caches tensorflow_session_parallelism tensorflow_session_config_file tensorflow_intra_op_parallelism
tensorflow_inter_op_parallelism use_alts_credentials ssl_config_file platform_config_file
per_process_gpu_memory_fraction saved_model_tags grpc_channel_arguments grpc_max_threads enable_model_warmup
num_request_iterations_for_warmup version monitoring_config_file remove_unused_fields_from_bundle_metagraph
prefer_tflite_model num_tflite_pools num_tflite_interpreters_per_pool enable_signature_method_name_check
xla_cpu_compilation_enabled xla_gpu_compilation_enabled enable_profiler thread_pool_factory_config_file
mixed_precision skip_initialize_tpu enable_grpc_healthcheck_service enable_serialization_as_tensor_content""".split()
"""The 48 flags of tensorflow_model_server 2.21 (tensorflow_serving/model_servers/main.cc), in its order."""


def test_every_main_cc_flag_is_known_with_tensorflows_syntax():
    assert len(MAIN_CC_FLAGS) == 48 and set(tf_serving_flags.FLAGS) == set(MAIN_CC_FLAGS)
    assert tf_serving_flags.parse(["--enable_batching", "--port=9000", "--mixed_precision=bfloat16",
                                   "--per_process_gpu_memory_fraction=0.5", "--load_retry_interval_micros=-1"]) \
        == {"enable_batching": True, "port": 9000, "mixed_precision": "bfloat16",
            "per_process_gpu_memory_fraction": 0.5, "load_retry_interval_micros": -1}
    for bad in (["--port", "8500"], ["--enable_batching=1"], ["--port=85x"], ["--rest_api_port"], ["--nope=1"]):
        with pytest.raises(UserError):
            tf_serving_flags.parse(bad)
    notes = tf_serving_flags.notes(tf_serving_flags.parse(["--ssl_config_file=/x", "--port=1"]))
    assert notes == ["note: --ssl_config_file=/x has no effect on alexnet-tf serve: this server speaks plain gRPC "
                     "only (no TLS)"]


def test_the_serve_command_takes_every_main_cc_flag(tmp_path):
    """All 48 flags at once (values that keep the server usable): it starts, prints a note for each one without a
    meaning here, answers, and --mixed_precision=bfloat16 set the Session's rewrite."""
    write_version(tmp_path / "tiny", 1)
    (tmp_path / "batching.config").write_text("max_batch_size { value: 4 }")
    (tmp_path / "session.config").write_text("allow_soft_placement: true")
    socket_path = tmp_path / "grpc.sock"
    values = {"port": "0", "grpc_socket_path": str(socket_path), "rest_api_port": "0",
              "model_config_file": "", "model_name": "tiny", "model_base_path": str(tmp_path / "tiny"),
              "batching_parameters_file": str(tmp_path / "batching.config"), "monitoring_config_file": "",
              "tensorflow_session_config_file": str(tmp_path / "session.config"), "platform_config_file": "",
              "ssl_config_file": "", "thread_pool_factory_config_file": "", "saved_model_tags": "serve",
              "grpc_channel_arguments": "grpc.max_connection_age_ms=600000", "mixed_precision": "bfloat16",
              "tensorflow_session_parallelism": "1", "tensorflow_intra_op_parallelism": "0",
              "tensorflow_inter_op_parallelism": "0", "per_process_gpu_memory_fraction": "0.0",
              "load_retry_interval_micros": "100000", "version": "false", "use_alts_credentials": "false",
              "enable_batching": "true", "enable_grpc_healthcheck_service": "true"}
    argv = []
    for name in MAIN_CC_FLAGS:
        flag = tf_serving_flags.FLAGS[name]
        value = values.get(name, str(flag.default).lower() if flag.kind == "bool" else str(flag.default))
        argv.append(f"--{name}={value}")
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tf.cli", "serve", *argv], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                with grpc.insecure_channel(f"unix:{socket_path}") as channel:
                    request = predict_pb2.PredictRequest()
                    request.model_spec.name = "tiny"
                    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
                    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
                break
            except grpc.RpcError:
                assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
                time.sleep(0.5)
        assert list(reply.outputs["y"].float_val) == [2.0]
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # --enable_grpc_healthcheck_service=true
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    noted = {line.split("=")[0][len("note: --"):] for line in output.splitlines() if line.startswith("note: --")}
    assert noted == {n for n, f in tf_serving_flags.FLAGS.items() if f.no_effect}, output[-3000:]


def test_mixed_precision_bfloat16_sets_the_sessions_rewrite():
    from tensorflow.core.protobuf import rewriter_config_pb2

    from serving.backend import session_config

    rewrite = session_config(ServerOptions(mixed_precision="bfloat16")).graph_options.rewrite_options
    assert rewrite.auto_mixed_precision_onednn_bfloat16 == rewriter_config_pb2.RewriterConfig.ON
    assert session_config(ServerOptions()).graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == \
        rewriter_config_pb2.RewriterConfig.DEFAULT


def test_dockerfile_flags_parse_as_tensorflow_model_server_parses_them():
    from tests.serving.test_config_files import dockerfile_instructions

    cmd = json.loads(next(a for kind, a in dockerfile_instructions() if kind == "CMD"))
    values = tf_serving_flags.parse(cmd)
    assert values["enable_grpc_healthcheck_service"] is True and values["enable_batching"] is True
    assert not tf_serving_flags.notes(values)


@pytest.mark.parametrize("native", [False, True])
def test_a_bfloat16_export_on_a_cpu_without_native_bfloat16_is_warned_about(tmp_path, caplog, monkeypatch, native):
    import serving.models

    monkeypatch.setattr(serving.models, "native_bfloat16", lambda: native)
    write_version(tmp_path / "tiny", 1, weight_dtype=tf.bfloat16)
    server = start(tmp_path, [ModelConfig("tiny", tmp_path / "tiny")])
    try:
        assert predict(server)[0] == 1
        warned = [r.getMessage() for r in caplog.records if "runs emulated" in r.getMessage()]
        assert len(warned) == (0 if native else 1)
        assert not warned or "tiny version 1 is a bfloat16 export" in warned[0]
    finally:
        server.stop(grace=1)
    assert server_precision(tmp_path / "tiny" / "1") == "bfloat16"
    write_version(tmp_path / "float", 1)
    assert server_precision(tmp_path / "float" / "1") == "float32"


def server_precision(directory):
    from serving.servable import Servable

    servable = Servable("tiny", 1, directory)
    try:
        return servable.precision
    finally:
        servable.session.close()
