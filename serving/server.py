"""A local server with TF Serving's API over the same export directory, for machines without Docker and for tests.

gRPC: PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus, and grpc.health.v1.Health with
--enable_grpc_healthcheck_service=true. REST: GET /v1/models/NAME[/versions/N | /labels/L][/metadata], POST
.../NAME[/versions/N | /labels/L]:predict. Models run through the TF1 Session path TF Serving itself uses; their
versions load and unload as TF Serving's ServerCore manages them (`models`). Status codes follow TF Serving: unknown
model or version NOT_FOUND, unknown label or bad input INVALID_ARGUMENT, unknown signature FAILED_PRECONDITION,
overload UNAVAILABLE, oversize RESOURCE_EXHAUSTED.

This module only wires the parts: `model_config` and `models` (which versions), `servable` (one version),
`backend` (the shared request path and `ServerOptions`), `grpc_api`, `rest_api`, `batching`, `metrics`; `errors`
is what they share.
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
from serving.model_config import ModelConfig, single_model
from serving.models import ModelManager, StartupFailure
from serving.rest_api import RestHandler

__all__ = ["LocalServer", "ServerOptions", "StartupFailure", "session_config"]

HEALTH_SERVICES = ("", "ModelService", "PredictionService")
"""The services TF Serving's health service answers SERVING for (server.cc; "" is gRPC's overall status)."""

log = logging.getLogger("alexnet_tf.serving")

DRAIN_SECONDS = 25.0
"""How long a shutdown waits for admitted requests: inside Kubernetes' default 30 s grace period."""


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """--grpc_channel_arguments "k=v,k2=v2" as gRPC options, integers as integers (main.cc's parseGrpcChannelArgs)."""
    arguments = []
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return arguments


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
    """gRPC and REST servers over one ModelManager; `start`, then `wait` or `stop`. Serves one model
    (`model_base_path`, `model_name`) or the models of a config (`models`, read from `config_file`, which is read
    again every `options.config_poll_seconds` when that is positive)."""

    def __init__(self, model_base_path: str | pathlib.Path | None = None, model_name: str = "alexnet",
                 options: ServerOptions | None = None, *, models: list[ModelConfig] | None = None,
                 config_file: str | pathlib.Path | None = None):
        self.options = options = options or ServerOptions()
        if models is None:
            if model_base_path is None:
                raise ValueError("give model_base_path or models")
            models = single_model(model_name, pathlib.Path(model_base_path).absolute())
        self.manager = ModelManager(models, options.poll_seconds, session_config(options), options.load,
                                    config_file, options.config_poll_seconds)
        self.backend = Backend(self.manager, options)
        self.health = health.HealthServicer()
        # Every admitted RPC gets a thread at once (waiting for a model run or its batch happens in it), so a health
        # check never queues behind predictions; beyond that, RESOURCE_EXHAUSTED. (TF Serving advises at least
        # twice max_batch_size request threads with batching.)
        workers = options.grpc_max_threads or max(options.max_queue + options.grpc_workers,
                                                  2 * options.batching.batch_size if options.batching else 0)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", options.max_request_bytes),
                     ("grpc.max_send_message_length", 256 * 1024 * 1024),
                     *channel_arguments(options.grpc_channel_arguments)],
            maximum_concurrent_rpcs=workers,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(self.backend),
                                                                            self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.backend), self._grpc)
        if options.grpc_health:  # as TF Serving: off unless asked for (UNIMPLEMENTED then)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self.port = None
        if options.port:
            self.port = self._grpc.add_insecure_port(f"{options.host}:{options.port}")
            if self.port == 0:
                raise OSError(f"cannot bind gRPC to {options.host}:{options.port}")
        elif options.port == 0 and not options.grpc_socket_path:  # our tests: any free port
            self.port = self._grpc.add_insecure_port(f"{options.host}:0")
        if options.grpc_socket_path and not self._grpc.add_insecure_port(f"unix:{options.grpc_socket_path}"):
            raise OSError(f"cannot listen on the UNIX socket {options.grpc_socket_path}")
        self._http: http.server.ThreadingHTTPServer | None = None
        self.rest_port: int | None = None
        if options.rest_port is not None:
            handler = type("Handler", (RestHandler,), {"backend": self.backend})
            self._http = http.server.ThreadingHTTPServer((options.host, options.rest_port), handler)
            self._http.daemon_threads = True
            self.rest_port = self._http.server_address[1]
        self._stopped = threading.Event()  # no new requests
        self._finished = threading.Event()  # requests drained, models released

    def start(self) -> LocalServer:
        """Load every model's versions, then listen; StartupFailure (nothing listening) when TF Serving would exit:
        labels it refuses at start, or a model none of whose versions loaded."""
        try:
            self.manager.start()
        except BaseException:
            self.manager.stop()
            self._grpc.stop(0)
            if self._http is not None:
                self._http.server_close()
            raise
        for service in HEALTH_SERVICES:  # TF Serving sets them once it has started, and never changes them
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._grpc.start()
        if self._http is not None:
            threading.Thread(target=self._http.serve_forever, name="rest", daemon=True).start()
        log.info("gRPC on %s:%s%s, models %s", self.options.host, self.port,
                 f", REST on {self.options.host}:{self.rest_port}" if self.rest_port else "",
                 ", ".join(f"{m.name} from {m.config.base_path}" for m in self.manager.models.values()))
        return self

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
