"""A local server with TF Serving's API over the same export directory, for machines without Docker and for tests.

gRPC: PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus, grpc.health.v1.Health.
REST: GET /v1/models/NAME[/versions/N], GET .../metadata, POST .../NAME[/versions/N]:predict.
Models run through the TF1 Session path TF Serving itself uses. The highest version is served; newer versions are
picked up by polling and swapped in only after they have loaded and replayed their warmup requests, while the old
one finishes its requests. Status codes follow TF Serving: unknown model or version NOT_FOUND, unknown signature
FAILED_PRECONDITION, bad input INVALID_ARGUMENT, overload UNAVAILABLE, oversize RESOURCE_EXHAUSTED.

This module only wires the parts: `models` (versions), `backend` (the shared request path and `ServerOptions`),
`grpc_api`, `rest_api`, `batching`, `metrics`; `errors` is what they share.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import logging
import pathlib
import signal
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.backend import Backend, ServerOptions, session_config
from serving.grpc_api import ModelServicer, PredictionServicer
from serving.models import ModelManager
from serving.rest_api import RestHandler

__all__ = ["LocalServer", "ServerOptions", "session_config"]

log = logging.getLogger("alexnet_tf.serving")

DRAIN_SECONDS = 25.0
"""How long a shutdown waits for admitted requests: inside Kubernetes' default 30 s grace period."""


def _answer_waiting_connections(server: http.server.ThreadingHTTPServer) -> None:
    """Connections the kernel accepted that the server has not taken yet would be reset when the listening socket
    closes: each gets its answer (503 while draining) instead."""
    server.socket.setblocking(False)
    while True:
        try:
            connection, address = server.socket.accept()
        except OSError:  # none left (BlockingIOError) or the socket is gone
            break
        connection.setblocking(True)
        try:
            server.finish_request(connection, address)  # here, not in a thread the exit would not wait for
        except OSError:
            pass
        finally:
            server.shutdown_request(connection)


class LocalServer:
    """gRPC and REST servers over one ModelManager; `start`, then `wait` or `stop`."""

    def __init__(self, model_base_path: str | pathlib.Path, model_name: str = "alexnet",
                 options: ServerOptions | None = None):
        self.options = options = options or ServerOptions()
        self.manager = ModelManager(model_name, model_base_path, options.poll_seconds, session_config(options))
        self.backend = Backend(self.manager, options)
        self.health = health.HealthServicer()
        # Every admitted RPC gets a thread at once (waiting for a model run or its batch happens in it), so a health
        # check never queues behind predictions; beyond that, RESOURCE_EXHAUSTED. (TF Serving advises at least
        # twice max_batch_size request threads with batching.)
        workers = max(options.max_queue + options.grpc_workers,
                      2 * options.batching.batch_size if options.batching else 0)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", options.max_request_bytes),
                     ("grpc.max_send_message_length", 256 * 1024 * 1024)],
            maximum_concurrent_rpcs=workers,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(self.backend),
                                                                            self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.backend), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self.port = self._grpc.add_insecure_port(f"{options.host}:{options.port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {options.host}:{options.port}")
        self._http: http.server.ThreadingHTTPServer | None = None
        self.rest_port: int | None = None
        if options.rest_port is not None:
            handler = type("Handler", (RestHandler,), {"backend": self.backend})
            self._http = http.server.ThreadingHTTPServer((options.host, options.rest_port), handler)
            self._http.daemon_threads = True
            self.rest_port = self._http.server_address[1]
        self._stopped = threading.Event()  # no new requests
        self._finished = threading.Event()  # requests drained, models released

    def _update_health(self) -> None:
        state = (health_pb2.HealthCheckResponse.SERVING if self.manager.current is not None
                 else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", "tensorflow.serving.PredictionService"):
            self.health.set(service, state)

    def start(self) -> LocalServer:
        self.manager.start()
        self._update_health()
        self._grpc.start()
        if self._http is not None:
            threading.Thread(target=self._http.serve_forever, name="rest", daemon=True).start()
        if self.options.poll_seconds > 0:  # otherwise no version can come or go after start
            threading.Thread(target=self._watch_health, name="health", daemon=True).start()
        log.info("gRPC on %s:%d%s, model %s from %s", self.options.host, self.port,
                 f", REST on {self.options.host}:{self.rest_port}" if self.rest_port else "", self.manager.name,
                 self.manager.base_path)
        return self

    def _watch_health(self) -> None:
        while not self._stopped.wait(self.options.poll_seconds):
            self._update_health()

    def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Drain, then stop: health NOT_SERVING first (watchers see it), then new RPCs and REST requests refused
        (UNAVAILABLE, 503 with "Connection: close") while every admitted request is answered, queued batches
        included (up to `grace` seconds); then the sockets close and the models are released."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        started = time.monotonic()
        self.health.enter_graceful_shutdown()  # health checks keep answering: NOT_SERVING
        # New predictions get UNAVAILABLE from our handlers while the admitted ones finish; only then does gRPC stop.
        # (Stopping gRPC first cancelled RPCs that had arrived but not reached a handler: measured, CANCELLED.)
        left = self.backend.drain(grace)
        self._grpc.stop(max(0.1, grace - (time.monotonic() - started))).wait()
        if self._http is not None:
            self._http.shutdown()
            _answer_waiting_connections(self._http)
            self._http.server_close()
        self.backend.stop()
        self.manager.stop()
        log.info("stopped in %.1f s%s", time.monotonic() - started,
                 f"; {left} request(s) still running after {grace:g} s were cut off" if left else
                 ": every admitted request was answered")
        self._finished.set()

    def wait(self) -> None:
        """Block until SIGTERM or SIGINT, then stop cleanly."""
        def handle(signum, frame):
            log.info("signal %d: shutting down", signum)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        while not self._finished.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass
