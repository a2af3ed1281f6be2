"""The local TF-Serving-compatible server over real gRPC and HTTP on loopback, driven by our clients."""

import base64
import concurrent.futures
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import PredictClient, RestClient, ServingError
from serving.client import string_tensor
from tests.conftest import ROOT


def jpeg(seed: int, size=(200, 260)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported_base(smoke_run, module_tmp_path):
    from tests.conftest import run_cli

    run_dir, _ = smoke_run
    base = module_tmp_path / "served"
    result = run_cli("export", str(run_dir), "--base-dir", str(base))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "docker build" in result.stdout and "alexnet-tf predict" in result.stdout
    return base / "alexnet"


def start_serving(port: int, *args: str) -> subprocess.Popen:
    """`alexnet-tf serve ARGS` in its own process, returned once it answers on `port`."""
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tf.cli", "serve", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = PredictClient(f"127.0.0.1:{port}", timeout=60)
    deadline = time.time() + 300
    while True:
        try:
            client.metadata()
            return process
        except ServingError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("server did not come up: " + process.communicate()[0][-3000:])
            time.sleep(0.5)


@pytest.fixture(scope="module")
def server(exported_base):
    port, rest = free_port(), free_port()
    process = start_serving(port, "--model-base-path", str(exported_base), f"--port={port}", "--rest-port",
                            str(rest), "--poll-seconds", "0.5", "--max-request-mb", "2", "--log-level", "DEBUG",
                            "--rest-timeout", "2")
    yield {"port": port, "rest": rest, "process": process, "base": exported_base}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_metadata_lists_the_three_signatures(server):
    metadata = PredictClient(f"127.0.0.1:{server['port']}").metadata()
    assert metadata["version"] == 1
    assert set(metadata["signatures"]) == {"serving_default", "center_crop", "from_pixels"}
    assert metadata["signatures"]["serving_default"]["inputs"] == ["image_bytes"]


def test_grpc_and_rest_give_the_same_numbers(server):
    images = [jpeg(1), jpeg(2, (300, 180))]
    by_grpc = PredictClient(f"127.0.0.1:{server['port']}").predict_raw({"image_bytes": string_tensor(images)})
    rest = RestClient(f"http://127.0.0.1:{server['rest']}")
    by_rest = rest.predict_raw(images)
    np.testing.assert_allclose(by_rest["probabilities"], by_grpc["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(by_rest["classes"], by_grpc["classes"])
    predictions = rest.predict(images)
    labels = (server["base"] / "1" / "assets" / "labels.txt").read_text().split()
    assert predictions[0].labels[0] in labels and len(predictions[0].scores) == 5
    # Row format with b64, as in TF Serving's REST docs.
    body = json.dumps({"signature_name": "center_crop",
                       "instances": [{"b64": base64.b64encode(images[0]).decode()}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server['rest']}/v1/models/alexnet:predict", data=body)
    with urllib.request.urlopen(request, timeout=60) as response:
        row = json.loads(response.read())["predictions"][0]
    assert set(row) == {"probabilities", "classes", "scores", "labels"}
    assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"


def raw_predict(port, inputs, model="alexnet", signature="", version=None):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
        request.model_spec.version.value = version
    for key, tensor in inputs.items():
        request.inputs[key].CopyFrom(tensor)
    return stub.Predict(request, timeout=60)


def test_outputs_come_in_the_typed_fields_as_from_tf_serving(server):
    response = raw_predict(server["port"], {"image_bytes": string_tensor([jpeg(5)])}, signature="center_crop")
    scores, labels = response.outputs["scores"], response.outputs["labels"]
    assert len(scores.float_val) == 5 and not scores.tensor_content  # client code reading .float_val works
    assert len(labels.string_val) == 5


def test_every_bad_request_gets_its_code_and_the_server_keeps_serving(server):
    import tensorflow as tf

    port = server["port"]
    huge_png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (90000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    cases = [
        ({"image_bytes": string_tensor([b""])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ({"image_bytes": string_tensor([b"no image here"])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
        ({"image_bytes": string_tensor([jpeg(3)[:300]])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "JPEG"),
        ({"image_bytes": string_tensor([huge_png])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "too large"),
        ({"image_bytes": tf.make_tensor_proto(np.zeros(2, np.float32))}, {}, grpc.StatusCode.INVALID_ARGUMENT,
         "must be string"),
        ({"pictures": string_tensor([jpeg(4)])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "takes inputs"),
        ({"image_bytes": string_tensor([jpeg(4)])}, {"model": "resnet"}, grpc.StatusCode.NOT_FOUND, "resnet"),
        ({"image_bytes": string_tensor([jpeg(4)])}, {"version": 42}, grpc.StatusCode.NOT_FOUND, "42"),
        ({"image_bytes": string_tensor([jpeg(4)])}, {"signature": "detect"}, grpc.StatusCode.FAILED_PRECONDITION,
         "detect"),
        ({"images": tf.make_tensor_proto(np.zeros((1, 128, 128, 3), np.uint8))}, {"signature": "from_pixels"},
         grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        ({"image_bytes": string_tensor([b"x" * (3 * 1024 * 1024)])}, {}, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    for inputs, spec, code, text in cases:
        with pytest.raises(grpc.RpcError) as error:
            raw_predict(port, inputs, **spec)
        assert error.value.code() == code, (text, error.value.details())
        assert text.lower() in (error.value.details() or "").lower() + text.lower() * (text == ""), error.value
        good = PredictClient(f"127.0.0.1:{port}").predict([jpeg(5)])
        assert len(good) == 1
    with pytest.raises(ServingError) as error:
        RestClient(f"http://127.0.0.1:{server['rest']}", "resnet", retries=0).predict([jpeg(6)])
    assert error.value.code == 404


def test_eight_concurrent_clients_of_25_requests(server):
    images = [jpeg(i, (120 + i, 140)) for i in range(4)]

    def client_run(index):
        client = PredictClient(f"127.0.0.1:{server['port']}", signature="center_crop", timeout=120)
        return [client.predict([images[(index + i) % 4]])[0].classes for i in range(25)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client_run, range(8)))
    assert sum(len(r) for r in results) == 200


def dockerfile_flags(rest_port: int) -> list[str]:
    """The Dockerfile's CMD (the flags TF Serving gets in the image), its /config/ files read from serving/."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    flags = json.loads(re.search(r"^CMD (\[.*\])", text, re.M)[1])
    flags = [flag.replace("/config/", f"{ROOT / 'serving'}/") for flag in flags]
    return [f"--rest_api_port={rest_port}" if flag.startswith("--rest_api_port=") else flag for flag in flags]


@pytest.fixture(scope="module")
def batched_server(exported_base):
    """The same export served with the Dockerfile's own TF Serving flags, unchanged (batching on, its configs)."""
    port, rest = free_port(), free_port()
    flags = dockerfile_flags(rest)
    assert "--enable_batching=true" in flags and any(f.startswith("--monitoring_config_file=") for f in flags)
    process = start_serving(port, f"--model_base_path={exported_base}", "--model_name=alexnet", f"--port={port}",
                            *flags)
    yield {"port": port, "rest": rest}
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    started = next(line for line in output.splitlines() if line.startswith("serving alexnet"))
    assert "batching up to 8 (timeout 10000 us, requests of up to 64 split across batches)" in started
    assert f"REST http://127.0.0.1:{rest}" in started
    assert "2 model runs at once, 1 intra-op thread(s) each" in started  # the Dockerfile's thread flag


def test_batched_answers_equal_unbatched_ones_for_mixed_request_sizes(server, batched_server):
    """Concurrent requests of 1-3 images are merged into batches and split back:
    every request gets the probabilities the unbatched server gives it (float32 kernels may block differently
    for another batch size: 1e-5 absolute on probabilities)."""
    requests = [[jpeg(10 * i + j, (180 + 20 * j, 240)) for j in range(1 + i % 3)] for i in range(12)]
    plain = PredictClient(f"127.0.0.1:{server['port']}", signature="center_crop", timeout=120)
    expected = [plain.predict_raw({"image_bytes": string_tensor(images)})["probabilities"] for images in requests]

    def batched(images):
        client = PredictClient(f"127.0.0.1:{batched_server['port']}", signature="center_crop", timeout=120)
        return client.predict_raw({"image_bytes": string_tensor(images)})["probabilities"]

    batches = ":tensorflow:serving:batching_session:processed_batch_size"  # one sample per batch run
    count_key = (f"{batches}_count", (("thread_pool_name", "batch_threads"),))
    before = scrape(batched_server["rest"]).get(batches, {}).get(count_key, 0)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(batched, requests))
    for images, answer, reference in zip(requests, answers, expected):
        assert answer.shape == (len(images), reference.shape[1])
        np.testing.assert_allclose(answer, reference, atol=1e-5)
    metrics = scrape(batched_server["rest"])
    runs = metrics[batches][count_key] - before
    assert 1 <= runs <= len(requests)  # requests were merged whenever they met in the queue
    def total(family):  # rows over every batch so far
        name = f":tensorflow:serving:batching_session:{family}"
        return metrics[name][(f"{name}_sum", (("thread_pool_name", "batch_threads"),))]

    assert total("processed_batch_size") == total("input_batch_size") + total("padding_size")


def test_a_request_larger_than_a_batch_is_split_and_one_over_max_batch_size_refused(server, batched_server):
    images = [jpeg(i, (200, 240 + 8 * i)) for i in range(11)]  # 11 rows: split over batches of 8
    plain = PredictClient(f"127.0.0.1:{server['port']}", signature="center_crop", timeout=120)
    batched = PredictClient(f"127.0.0.1:{batched_server['port']}", signature="center_crop", timeout=120)
    request = {"image_bytes": string_tensor(images)}
    np.testing.assert_allclose(batched.predict_raw(request)["probabilities"],
                               plain.predict_raw(request)["probabilities"], atol=1e-5)
    with pytest.raises(grpc.RpcError) as error:
        raw_predict(batched_server["port"], {"image_bytes": string_tensor([jpeg(1)] * 65)}, signature="center_crop")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_bad_image_fails_the_batch_it_joined_as_in_tf_serving(batched_server):
    """TF Serving's BatchingSession fails every request of a batch whose run fails: the corrupt image gets
    INVALID_ARGUMENT, a request merged with it gets the same, the others OK; the server keeps serving."""
    good = [jpeg(5)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(raw_predict, batched_server["port"], {"image_bytes": string_tensor(images)}, "alexnet",
                               "center_crop") for images in (good, [b"not an image"], good, good, good, good)]
    codes = []
    for future in futures:
        try:
            future.result()
            codes.append("OK")
        except grpc.RpcError as error:
            codes.append(error.code().name)
    assert codes[1] == "INVALID_ARGUMENT" and set(codes) <= {"OK", "INVALID_ARGUMENT"}, codes
    raw_predict(batched_server["port"], {"image_bytes": string_tensor(good)}, "alexnet", "center_crop")


def scrape(rest_port: int) -> dict:
    """The metrics endpoint read by Prometheus' own text parser: {family name: {labels tuple: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {family.name: {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                          for sample in family.samples} for family in text_string_to_metric_families(text)}


def test_prometheus_metrics_count_the_requests_sent(server):
    """TF Serving's metric names at its path; the counters move by exactly the requests this test sends."""
    name = ":tensorflow:serving:request_count"  # the parser names a counter's samples <family>_total
    before = scrape(server["rest"])
    ok_key = (f"{name}_total", (("model_name", "alexnet"), ("status", "OK")))
    bad_key = (f"{name}_total", (("model_name", "alexnet"), ("status", "INVALID_ARGUMENT")))
    client = PredictClient(f"127.0.0.1:{server['port']}", signature="center_crop")
    for _ in range(3):
        client.predict([jpeg(3)])
    with pytest.raises(ServingError):
        client.predict([b"not an image"])
    RestClient(f"http://127.0.0.1:{server['rest']}").predict([jpeg(4)])
    after = scrape(server["rest"])
    assert after[name][ok_key] - before.get(name, {}).get(ok_key, 0) == 4
    assert after[name][bad_key] - before.get(name, {}).get(bad_key, 0) == 1
    latency = after[":tensorflow:serving:request_latency"]
    rest_count = latency[(":tensorflow:serving:request_latency_count",
                          (("API", "predict"), ("entrypoint", "REST"), ("model_name", "alexnet")))]
    assert rest_count >= 1
    state = after[":alexnet_tf:serving:model_version_state"]
    assert state[(":alexnet_tf:serving:model_version_state",
                  (("model_name", "alexnet"), ("state", "AVAILABLE"), ("version", "1")))] == 1
    by_signature = after[":alexnet_tf:serving:request_count"]
    assert by_signature[(":alexnet_tf:serving:request_count_total", (
        ("model_name", "alexnet"), ("signature", "center_crop"), ("status", "OK"), ("version", "1")))] >= 3


def post(port: int, body: bytes, *, length: int | None = None, path="/v1/models/alexnet:predict"):
    """(status, JSON body) of a raw POST; `length` may claim more bytes than are sent. A dropped connection raises."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body) if length is None else length))
        connection.endheaders()
        connection.send(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_malformed_rest_bodies_get_a_status_and_a_json_error(server):
    image = base64.b64encode(jpeg(6)).decode()
    small = base64.b64encode(jpeg(8, (16, 16)))
    cases = [
        (b"[" * 100_000, 400, "nested too deeply"),
        (b'{"instances": [{"b64": "' + image.encode() + b'"}], "signature_name": ' + b"[" * 200 + b"]" * 200 + b"}",
         400, "signature_name"),
        (b'{"instances": ' + b"1" * 5000 + b"}", 400, "not JSON"),  # a 5000-digit number
        (b'{"inputs": {"images": [[[["x"]]]]}, "signature_name": "from_pixels"}', 400, "uint8"),
        (b'{"inputs": {"images": ' + b"[" * 100 + b"1" + b"]" * 100 + b'}, "signature_name": "from_pixels"}',
         400, "nested more than 64"),
        (b'{"instances": [{"b64": 5}]}', 400, ""),
        (b'{"instances": "' + b"x" * 10 + b'"}', 400, "non-empty list"),
        (b'{"instances": [' + b",".join([b'{"b64": "' + small + b'"}'] * 65) + b"]}", 400, "at most 64"),
    ]
    for body, status, says in cases:
        code, answer = post(server["rest"], body)
        assert code == status and says in answer["error"], (body[:60], code, answer)
    code, answer = post(server["rest"], b"x" * 10, length=3 * 1024 * 1024)  # over --max-request-mb 2
    assert code == 413 and "exceeds the limit" in answer["error"]
    code, answer = post(server["rest"], b'{"instances": []}', length=500)  # shorter than its Content-Length
    assert code == 408 and "did not arrive" in answer["error"]
    assert PredictClient(f"127.0.0.1:{server['port']}").predict([jpeg(7)])  # still serving


def test_predict_command_prints_a_table_and_json(server, tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(jpeg(10 + i))
    table = run_cli("predict", str(tmp_path / "imgs"), "--server", f"127.0.0.1:{server['port']}",
                    "--batch-size", "2")
    assert table.returncode == 0, table.stderr[-2000:]
    assert table.stdout.count("%") == 15 and "0.jpg" in table.stdout
    lines = run_cli("predict", str(tmp_path / "imgs" / "1.jpg"), "--rest", f"http://127.0.0.1:{server['rest']}",
                    "--json").stdout.splitlines()
    assert len(json.loads(lines[-1])["labels"]) == 5
    missing = run_cli("predict", str(tmp_path / "nope.jpg"), "--server", f"127.0.0.1:{server['port']}")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_a_new_version_is_picked_up_without_restart(server):
    base = server["base"]
    shutil.copytree(base / "1", base / ".incoming")
    os.rename(base / ".incoming", base / "2")  # publish atomically, as `alexnet-tf export` does
    client = PredictClient(f"127.0.0.1:{server['port']}")
    deadline = time.time() + 120
    while client.metadata()["version"] != 2:
        assert time.time() < deadline, "version 2 was not picked up"
        assert len(client.predict([jpeg(7)])) == 1  # the old version keeps answering meanwhile
        time.sleep(0.5)
    assert len(client.predict([jpeg(8)])) == 1


def test_sigterm_shuts_down_cleanly(server):
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert "shutting down" in output
    assert "status=OK" in output  # one debug line per request


@pytest.mark.slow
def test_sigterm_under_load_answers_every_admitted_request_and_resets_none(exported_base):
    """16 gRPC and 2 REST clients sending, batching on (the Dockerfile's flags), then SIGTERM: health watchers see
    NOT_SERVING, every request the server took gets its answer, later ones UNAVAILABLE / 503 / a refused
    connection, never a reset or a cut-off RPC; the server exits 0."""
    import threading

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, rest = free_port(), free_port()
    process = start_serving(port, f"--model_base_path={exported_base}", "--model_name=alexnet", f"--port={port}",
                            *dockerfile_flags(rest))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    watched = []
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="PredictionService"), timeout=120)

    def follow():
        try:
            watched.extend(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status) for r in watch)
        except grpc.RpcError:
            pass

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "alexnet", "center_crop"
    request.inputs["image_bytes"].CopyFrom(string_tensor([jpeg(3)]))
    body = json.dumps({"signature_name": "center_crop",
                       "instances": [{"b64": base64.b64encode(jpeg(4)).decode()}]}).encode()
    outcomes, signalled = [], threading.Event()

    def grpc_client():
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        while True:
            try:
                stub.Predict(request, timeout=60)
                outcomes.append(("grpc", "OK", signalled.is_set()))
            except grpc.RpcError as error:
                outcomes.append(("grpc", error.code().name, signalled.is_set()))
                return

    def rest_client():
        while True:
            try:
                status, _ = post(rest, body)
            except ConnectionRefusedError:
                outcomes.append(("rest", "refused", True))
                return
            except OSError as error:  # a reset or a dropped connection
                outcomes.append(("rest", type(error).__name__, signalled.is_set()))
                return
            outcomes.append(("rest", status, signalled.is_set()))
            if status != 200:
                return

    threads = [threading.Thread(target=follow)] + [threading.Thread(target=grpc_client) for _ in range(16)] + \
        [threading.Thread(target=rest_client) for _ in range(2)]
    for thread in threads:
        thread.start()
    while sum(1 for o in outcomes if o[1] in ("OK", 200)) < 40:  # under load
        assert process.poll() is None and len(outcomes) < 10_000
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    signalled.set()
    output = process.communicate(timeout=90)[0]
    for thread in threads:
        thread.join(timeout=60)
    assert process.returncode == 0, output[-3000:]
    assert "every admitted request was answered" in output, output[-3000:]
    assert watched[0] == "SERVING" and watched[-1] == "NOT_SERVING", watched
    kinds = {(api, outcome) for api, outcome, _ in outcomes}
    assert kinds <= {("grpc", "OK"), ("grpc", "UNAVAILABLE"), ("rest", 200), ("rest", 503), ("rest", "refused")}, \
        kinds
    assert sum(1 for api, outcome, after in outcomes if after and outcome == "OK") >= 1  # in flight, answered
    assert all(not thread.is_alive() for thread in threads)  # every client got its refusal
