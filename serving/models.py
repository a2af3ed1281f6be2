"""The models a server holds: each loaded version (a TF1 Session, the path TF Serving itself takes) and the manager
that loads new versions from the base path as they appear and retires old ones once their requests finish;
and TF Serving's model config file."""

from __future__ import annotations

import logging
import pathlib
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import ServingFailure, clean_message

log = logging.getLogger("alexnet_tf.serving")


class Servable:
    """One loaded version: a TF1 Graph and Session, its signatures, and a count of requests using it."""

    def __init__(self, name: str, version: int, path: pathlib.Path,
                 config: tf.compat.v1.ConfigProto | None = None):
        self.name, self.version, self.path = name, version, path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            self.meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = {k: v for k, v in self.meta.signature_def.items() if not k.startswith("__")}
        self._users, self._retired, self._lock = 0, False, threading.Lock()

    def warm_up(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests (as TF Serving does at load); return how many."""
        path = self.path / "assets.extra" / "tf_serving_warmup_requests"
        count = 0
        if path.is_file():
            for record in tf.data.TFRecordDataset(str(path)):
                logged = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                request = logged.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                self.run(request.model_spec.signature_name or "serving_default", inputs)
                count += 1
        return count

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
        """Run a signature on NumPy inputs, checking names, dtypes and shapes against the SignatureDef."""
        feed, outputs = self.check(signature_name, inputs, output_filter)
        try:
            return self.session.run(outputs, feed)
        except tf.errors.InvalidArgumentError as error:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, clean_message(error)) from None
        except tf.errors.ResourceExhaustedError as error:
            raise ServingFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, clean_message(error)) from None
        except tf.errors.OpError as error:
            raise ServingFailure(grpc.StatusCode.INTERNAL, clean_message(error)) from None

    def check(self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()) -> tuple[dict, dict]:
        """(feed, fetches) for a signature, or ServingFailure naming what does not match its SignatureDef."""
        signature_name = signature_name or "serving_default"
        signature = self.signatures.get(signature_name)
        if signature is None:
            raise ServingFailure(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"Serving signature key \"{signature_name}\" not found; the model has "
                                 f"{sorted(self.signatures)}")
        expected, given = set(signature.inputs), set(inputs)
        if expected != given:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"signature {signature_name!r} takes inputs {sorted(expected)}, got {sorted(given)}")
        feed = {}
        for key, info in signature.inputs.items():
            value, dtype = inputs[key], tf.dtypes.as_dtype(info.dtype)
            value = np.asarray(value)
            if dtype == tf.string:
                if value.dtype.kind not in "OS" or any(not isinstance(v, bytes) for v in value.ravel()):
                    raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                         f"input {key!r} must be string (bytes), got {value.dtype}")
                value = value.astype(object)
            elif value.dtype != dtype.as_numpy_dtype:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"input {key!r} must be {dtype.name}, got {value.dtype}")
            dims = [d.size for d in info.tensor_shape.dim]
            if value.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
                shape = [d if d >= 0 else None for d in dims]
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"input {key!r} must have shape {shape}, got {list(value.shape)}")
            if value.ndim and value.shape[0] == 0:
                raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} is an empty batch")
            feed[info.name] = value
        outputs = {k: v.name for k, v in signature.outputs.items() if not output_filter or k in output_filter}
        unknown = set(output_filter) - set(signature.outputs)
        if unknown:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown outputs {unknown}")
        return feed, outputs

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.session.close()

    def retire(self) -> None:
        """No new requests; the session closes when the last running one finishes."""
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.session.close()


class ModelManager:
    """Serves the highest version under `base_path`, polling for newer ones."""

    def __init__(self, name: str, base_path: str | pathlib.Path, poll_seconds: float = 2.0,
                 config: tf.compat.v1.ConfigProto | None = None):
        self.name, self.base_path, self.poll_seconds = name, pathlib.Path(base_path), poll_seconds
        self.config = config
        self.current: Servable | None = None
        self.states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def versions_on_disk(self) -> list[int]:
        if not self.base_path.is_dir():
            return []
        return sorted(int(p.name) for p in self.base_path.iterdir()
                      if p.name.isdigit() and (p / "saved_model.pb").is_file())

    def poll(self) -> None:
        """Load a newer version if one has appeared; a broken one is recorded and skipped, never fatal."""
        versions = self.versions_on_disk()
        if not versions:
            return
        newest = versions[-1]
        current = self.current.version if self.current else 0
        if newest <= current or self.states.get(newest, ("",))[0] == "END":
            return
        self.states[newest] = ("LOADING", "")
        started = time.perf_counter()
        try:
            servable = Servable(self.name, newest, self.base_path / str(newest), self.config)
            warmed = servable.warm_up()
        except Exception as error:  # a bad version must not take the server down
            log.error("version %d of %s failed to load: %s", newest, self.name, clean_message(error))
            self.states[newest] = ("END", f"failed to load: {clean_message(error)}")
            return
        with self._lock:
            old, self.current = self.current, servable
            self.states[newest] = ("AVAILABLE", "")
            if old is not None:
                self.states[old.version] = ("END", "")
        if old is not None:
            old.retire()
        log.info("serving %s version %d (loaded and warmed up with %d requests in %.1f s)", self.name, newest,
                 warmed, time.perf_counter() - started)

    def start(self) -> None:
        """Load the newest version, then poll every `poll_seconds`. As TF Serving's
        --file_system_poll_wait_seconds: 0 looks once, at start; a negative value never looks (no version loads)."""
        if self.poll_seconds < 0:
            log.warning("--file_system_poll_wait_seconds=%g: the base path is never polled, so no version of %s will "
                        "load (TF Serving waits for one forever)", self.poll_seconds, self.name)
            return
        self.poll()
        if self.poll_seconds == 0:
            return
        self._thread = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # keep polling whatever happens on disk
                log.exception("polling %s failed", self.base_path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.current is not None:
            self.current.retire()

    def acquire(self, name: str, version: int | None) -> Servable:
        """The servable for a request, counted as in use until `release`; raises NOT_FOUND."""
        if name != self.name:
            raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        with self._lock:
            servable = self.current
            if servable is None:
                raise ServingFailure(grpc.StatusCode.NOT_FOUND,
                                     f"no version of {name} is loaded yet (looking in {self.base_path})")
            if version is not None and version != servable.version:
                raise ServingFailure(grpc.StatusCode.NOT_FOUND,
                                     f"Servable not found for request: Specific({name}, {version}); "
                                     f"serving version {servable.version}")
            if not servable.acquire():
                raise ServingFailure(grpc.StatusCode.UNAVAILABLE, "the model is being replaced; retry")
            return servable


def read_model_config(path: str | pathlib.Path) -> list[tuple[str, str]]:
    """(name, base_path) of each model in TF Serving's ModelServerConfig text proto; ValueError says what is wrong."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = pathlib.Path(path)
    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as error:
        raise ValueError(str(error)) from None
    models = list(config.model_config_list.config)
    for model in models:
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {model.name!r} has platform {model.model_platform!r}, not tensorflow")
    return [(model.name, model.base_path) for model in models]
