"""The request path that gRPC and REST share: the server's options, admission control, batching, metrics and request
logging around a model run."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.batching import Batcher, BatchingFailure, BatchingParameters
from serving.errors import ServingFailure
from serving.metrics import Metrics, MonitoringConfig
from serving.models import LoadPolicy, ModelManager, VersionState
from serving.servable import Servable

log = logging.getLogger("alexnet_tf.serving")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Limits of the local server.

    max_concurrent: model runs at once (more queue); max_queue: requests waiting before new ones get UNAVAILABLE;
    max_request_bytes: the largest request accepted (gRPC answers RESOURCE_EXHAUSTED, REST 413);
    poll_seconds: how often the base path is scanned for new versions; batching: TF Serving's batching
    parameters (None: each request runs on its own, bounded by max_concurrent and max_queue); monitoring: where
    Prometheus metrics are served on the REST port (on by default, at TF Serving's path); max_images: images
    (rows) one request may hold, so no single request can take the server's memory (INVALID_ARGUMENT beyond it);
    rest_timeout: seconds a REST client may take to send its request (408 after that); intra_op_threads,
    inter_op_threads: TF Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism (0: auto,
    see `session_config`); tensor_content: outputs serialized into TensorProto.tensor_content, as TF Serving with
    --enable_serialization_as_tensor_content=true (default: the typed fields float_val, int_val, string_val, ...);
    grpc_health: the standard gRPC health service, as --enable_grpc_healthcheck_service=true (off by default, as
    in TF Serving); config_poll_seconds: how often --model_config_file is read again (0: never, as TF Serving);
    load: retries of a failed load and the label rule (`serving.models.LoadPolicy`); the rest are TF Serving's
    flags of the same names: grpc_socket_path (also listen on this UNIX socket), grpc_channel_arguments ("k=v,..."
    passed to the gRPC server), grpc_max_threads (gRPC handler threads; 0: enough for max_queue), cors (CORS
    headers on REST answers), session_config_file (a ConfigProto text proto under the thread flags),
    mixed_precision ("bfloat16": the Session's oneDNN bfloat16 rewrite, as TF Serving's --mixed_precision).
    """

    host: str = "127.0.0.1"
    port: int = 8500
    rest_port: int | None = 8501
    max_concurrent: int = 2
    max_queue: int = 64
    max_request_bytes: int = 64 * 1024 * 1024
    poll_seconds: float = 1.0
    grpc_workers: int = 16
    batching: BatchingParameters | None = None
    monitoring: MonitoringConfig = MonitoringConfig()
    max_images: int = 64
    rest_timeout: float = 30.0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    tensor_content: bool = False
    grpc_health: bool = False
    config_poll_seconds: float = 0.0
    load: LoadPolicy = LoadPolicy()
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    cors: bool = False
    session_config_file: str = ""
    mixed_precision: str = ""

    @property
    def concurrent_runs(self) -> int:
        """Model runs that may be in flight at once: one per batch thread with batching, else max_concurrent."""
        return self.batching.num_batch_threads if self.batching else self.max_concurrent


def session_config(options: ServerOptions) -> tf.compat.v1.ConfigProto:
    """The Session's config: --tensorflow_session_config_file's ConfigProto, then the thread pools over it, then
    --mixed_precision=bfloat16's rewrite (as TF Serving's server.cc and saved_model_bundle_factory.cc). Auto
    intra-op threads = cores / concurrent runs, so concurrent runs share the cores instead of each splitting every
    op over all of them: on 2 cores that is 1 thread per run, measured faster both unbatched (the two towers already
    run in parallel) and with two batch threads (benchmarks/serving.py)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.compat.v1.ConfigProto()
    if options.session_config_file:
        try:
            text_format.Parse(open(options.session_config_file).read(), config)
        except (OSError, text_format.ParseError) as error:
            raise ValueError(f"--tensorflow_session_config_file={options.session_config_file}: {error}") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if options.intra_op_threads or not config.intra_op_parallelism_threads:
        config.intra_op_parallelism_threads = options.intra_op_threads or max(1, cores // options.concurrent_runs)
    if options.inter_op_threads:
        config.inter_op_parallelism_threads = options.inter_op_threads
    if options.mixed_precision == "bfloat16":
        rewrite = config.graph_options.rewrite_options
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return config


class Admission:
    """Bounds model runs in flight and requests waiting for one: past the queue limit, UNAVAILABLE at once."""

    def __init__(self, max_concurrent: int, max_queue: int):
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.max_queue, self.waiting, self.lock = max_queue, 0, threading.Lock()

    def __enter__(self):
        with self.lock:
            if self.waiting >= self.max_queue:
                raise ServingFailure(grpc.StatusCode.UNAVAILABLE,
                                     f"server overloaded: {self.waiting} requests already waiting; retry later")
            self.waiting += 1
        self.slots.acquire()
        with self.lock:
            self.waiting -= 1
        return self

    def __exit__(self, *exc):
        self.slots.release()


class Backend:
    """What gRPC and REST share: the model manager, admission control, and request logging."""

    def __init__(self, manager: ModelManager, options: ServerOptions):
        self.manager, self.options = manager, options
        self.admission = Admission(options.max_concurrent, options.max_queue)
        self.metrics = Metrics(lambda: {key: state.state for key, state in manager.states().items()})
        self.batcher = Batcher(options.batching, self.metrics.record_batch) if options.batching is not None else None
        self.draining, self._in_flight, self._idle = False, 0, threading.Condition()
        self.last_refused = 0.0  # when a call was last refused for the shutdown (monotonic seconds)

    def _run(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
             output_filter) -> dict[str, np.ndarray]:
        if self.batcher is None:
            with self.admission:
                return servable.run(signature, inputs, output_filter)
        # Checked alone first: a malformed request never joins a batch. Requests are batched per version (the
        # servable), signature, output filter and input layout, so a batch is always one model's one computation.
        servable.check(signature, inputs, output_filter)
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        self.metrics.record_input(int(next(iter(arrays.values())).shape[0]), len(arrays))
        key = (id(servable), signature or "serving_default", tuple(sorted(output_filter)),
               tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in arrays.items())))
        try:
            return self.batcher.submit(key, lambda batch: servable.run(signature, batch, output_filter), arrays)
        except BatchingFailure as failure:
            raise ServingFailure(failure.code, failure.message) from None

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """One API call from arrival to answer (gRPC handler, REST request and its response): counted, so that a
        shutdown can wait for every admitted one; once draining, UNAVAILABLE instead."""
        with self._idle:
            if self.draining:
                self.last_refused = time.monotonic()
                raise ServingFailure(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout: float, quiet: float = 0.5) -> int:
        """Refuse new calls and wait up to `timeout` seconds for the admitted ones, then until no call has been
        refused for `quiet` seconds (clients have seen UNAVAILABLE; a call arriving once the sockets close would
        be cancelled or reset instead); the count still running."""
        deadline = time.monotonic() + timeout
        with self._idle:
            self.draining, self.last_refused = True, time.monotonic()
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        while self._in_flight == 0 and time.monotonic() < deadline and time.monotonic() - self.last_refused < quiet:
            time.sleep(0.05)
        return self._in_flight

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()

    def predict(self, name: str, version: int | None, signature: str, inputs: dict[str, np.ndarray],
                output_filter=(), entrypoint: str = "GRPC", label: str | None = None,
                ) -> tuple[int, str, dict[str, np.ndarray]]:
        started = time.perf_counter()
        code, served = "OK", version
        try:
            rows = max((np.shape(v)[0] for v in inputs.values() if np.ndim(v)), default=0)
            if rows > self.options.max_images:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"the request holds {rows} images; this server takes at most "
                                     f"{self.options.max_images} per request (--max-images-per-request)")
            servable = self.manager.acquire(name, version, label)
            served = servable.version
            try:
                outputs = self._run(servable, signature, inputs, output_filter)
            finally:
                servable.release()
            return servable.version, signature or "serving_default", outputs
        except ServingFailure as failure:
            code = failure.code.name
            raise
        finally:
            self.metrics.record_request(name, served, signature or "serving_default", code,
                                        time.perf_counter() - started, entrypoint)
            batch = next((len(v) for v in inputs.values() if np.ndim(v)), 0)
            log.debug("predict model=%s version=%s signature=%s batch=%d status=%s %.1f ms", name, served,
                      signature or "serving_default", batch, code, (time.perf_counter() - started) * 1e3)

    def metadata(self, name: str, version: int | None,
                 label: str | None = None) -> tuple[int, get_model_metadata_pb2.SignatureDefMap]:
        servable = self.manager.acquire(name, version, label)
        try:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signatures.items():
                signature_map.signature_def[key].CopyFrom(value)
            return servable.version, signature_map
        finally:
            servable.release()

    def status(self, name: str, version: int | None) -> list[tuple[int, VersionState]]:
        """GetModelStatus as TF Serving answers it: every version seen, highest first (a label in the ModelSpec is
        not looked at); NOT_FOUND for a model or version it has not seen."""
        if not name:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        model = self.manager.models.get(name) or self.manager.gone.get(name)
        states = sorted(model.states.items(), reverse=True) if model is not None else []
        if version is not None:
            states = [(v, s) for v, s in states if v == version]
            if not states:
                raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
        if not states:
            raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return states
