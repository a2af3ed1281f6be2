"""The models a server holds, managed as TF Serving's ServerCore does: each model's versions on disk filtered by its
version policy (the aspired versions), loaded highest first with retries, and unloaded only when that keeps a
version available (AvailabilityPreservingPolicy); version labels checked as UpdateModelVersionLabelMap does; the base
paths polled every --file_system_poll_wait_seconds and the config file every --model_config_file_poll_wait_seconds."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import threading
import time

import grpc
import tensorflow as tf

from alexnet_tf.training.execution import native_bfloat16
from serving.errors import ServingFailure, clean_message
from serving.model_config import ModelConfig, read_model_config
from serving.servable import Servable

log = logging.getLogger("alexnet_tf.serving")


class StartupFailure(RuntimeError):
    """TF Serving would not start with this config or these versions (it exits); the message is its reason."""


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """How versions load: TF Serving's --max_num_load_retries (retries after a failed load) and
    --load_retry_interval_micros (seconds here) between them, --allow_version_labels_for_unavailable_models,
    --saved_model_tags, --enable_model_warmup and --num_request_iterations_for_warmup (times each warm-up request
    is replayed; 0: once)."""

    max_num_load_retries: int = 5
    load_retry_interval: float = 60.0
    allow_labels_for_unavailable: bool = False
    tags: tuple[str, ...] = ("serve",)
    warmup: bool = True
    warmup_iterations: int = 0


@dataclasses.dataclass(frozen=True)
class VersionState:
    """A version's state as GetModelStatus reports it: START, LOADING, AVAILABLE, UNLOADING or END, and the error
    it ended with (code 0 when none)."""

    state: str
    message: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK


def _error_code(error: Exception) -> grpc.StatusCode:
    """The status a failed load ends with: TensorFlow's own code when it has one (NOT_FOUND for a missing
    saved_model.pb), else UNKNOWN."""
    if isinstance(error, tf.errors.OpError):
        return next((c for c in grpc.StatusCode if c.value[0] == error.error_code), grpc.StatusCode.UNKNOWN)
    if isinstance(error, (OSError, IOError)):
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.UNKNOWN


class ModelVersions:
    """One model: its loaded versions and the state of every version it has seen."""

    def __init__(self, config: ModelConfig, session_config: tf.compat.v1.ConfigProto | None, policy: LoadPolicy,
                 stopping: threading.Event):
        self.config, self.session_config, self.policy, self._stopping = config, session_config, policy, stopping
        self.loaded: dict[int, Servable] = {}
        self.states: dict[int, VersionState] = {}
        self._failed: set[int] = set()  # ended in error: not tried again while they stay aspired (as TF Serving)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def versions_on_disk(self) -> list[int]:
        """Integer-named directories under the base path (TF Serving's file system source; a non-integer name, such
        as a temporary copy about to be renamed, is not a version)."""
        base = self.config.base_path
        try:
            return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())
        except OSError:
            return []

    def poll(self) -> None:
        """Load and unload until the loaded versions are the aspired ones (one action at a time, as the manager)."""
        while not self._stopping.is_set() and self._step(self.config.aspired(self.versions_on_disk())):
            pass

    def unload_all(self) -> None:
        """The model left the config: every version goes (nothing is aspired any more)."""
        while self._step(set()):
            pass

    def _step(self, aspired: set[int]) -> bool:
        self._failed &= aspired  # a version that left and came back is tried again
        ready = set(self.loaded)
        unaspired = ready - aspired
        # AvailabilityPreservingPolicy::GetNextAction: unload the lowest un-aspired version if nothing is aspired,
        # an aspired one is serving, or more than one un-aspired one is; else load the highest new aspired one.
        if unaspired and (not aspired or aspired & ready or len(unaspired) > 1):
            self._unload(min(unaspired))
            return True
        new = aspired - ready - self._failed
        if new:
            self._load(max(new))
            return True
        return False

    def _load(self, version: int) -> None:
        path = self.config.base_path / str(version)
        attempts = 1 + max(0, self.policy.max_num_load_retries)
        self.states[version] = VersionState("LOADING")
        started = time.perf_counter()
        for attempt in range(1, attempts + 1):
            try:
                if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
                    raise FileNotFoundError(f"Could not find SavedModel .pb or .pbtxt at supplied export directory "
                                            f"path: {path}")
                servable = Servable(self.name, version, path, self.session_config, self.policy.tags)
                warmed = servable.warm_up(self.policy.warmup_iterations) if self.policy.warmup else 0
                break
            except Exception as error:  # a bad version must not take the server down
                message, code = clean_message(error), _error_code(error)
                log.error("loading version %d of %s failed (attempt %d of %d): %s", version, self.name, attempt,
                          attempts, message)
                if attempt == attempts or self._stopping.wait(max(0.0, self.policy.load_retry_interval)):
                    self.states[version] = VersionState("END", message, code)
                    self._failed.add(version)
                    return
        with self._lock:
            self.loaded[version] = servable
        self.states[version] = VersionState("AVAILABLE")
        log.info("serving %s version %d (loaded and warmed up with %d requests in %.1f s)", self.name, version,
                 warmed, time.perf_counter() - started)
        if servable.precision == "bfloat16" and not native_bfloat16():
            log.warning("%s version %d is a bfloat16 export and this CPU has no native bfloat16 (avx512_bf16 or AMX): "
                        "it runs emulated, slower than a float32 export", self.name, version)

    def _unload(self, version: int) -> None:
        self.states[version] = VersionState("UNLOADING")
        with self._lock:
            servable = self.loaded.pop(version)
        servable.retire()  # closes when its last request finishes
        self.states[version] = VersionState("END")
        log.info("unloaded %s version %d", self.name, version)

    def acquire(self, version: int | None) -> Servable:
        """The loaded servable asked for (the highest available one when `version` is None), counted as in use
        until `release`; NOT_FOUND with TF Serving's message otherwise."""
        for _ in range(3):  # a version retired between choosing and taking it: choose again
            with self._lock:
                if version is None:
                    servable = self.loaded[max(self.loaded)] if self.loaded else None
                else:
                    servable = self.loaded.get(version)
            if servable is None:
                request = f"Latest({self.name})" if version is None else f"Specific({self.name}, {version})"
                raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
            if servable.acquire():
                return servable
        raise ServingFailure(grpc.StatusCode.UNAVAILABLE, f"{self.name} is being replaced; retry")

    def stop(self) -> None:
        with self._lock:
            servables, self.loaded = list(self.loaded.values()), {}
        for servable in servables:
            servable.retire()


class ModelManager:
    """Every model of the config, its labels, and the threads that poll base paths and the config file."""

    def __init__(self, configs: list[ModelConfig], poll_seconds: float = 1.0,
                 session_config: tf.compat.v1.ConfigProto | None = None, policy: LoadPolicy = LoadPolicy(),
                 config_file: str | pathlib.Path | None = None, config_poll_seconds: float = 0.0):
        self.poll_seconds, self.session_config, self.policy = poll_seconds, session_config, policy
        self.config_file, self.config_poll_seconds = config_file, config_poll_seconds
        self.configs = list(configs)
        self._stopping = threading.Event()
        self.models: dict[str, ModelVersions] = {}
        self.gone: dict[str, ModelVersions] = {}  # models dropped from the config: GetModelStatus still lists them
        self.labels: dict[str, dict[str, int]] = {}
        self._work = threading.Lock()  # one reload or poll at a time, as ServerCore's config_mu_
        self._threads: list[threading.Thread] = []

    # -- start, stop and the threads ----------------------------------------------------------------------------

    def start(self) -> None:
        """Apply the config and load what it asks for; StartupFailure when TF Serving would not start. As TF
        Serving's --file_system_poll_wait_seconds: 0 looks once, at start; a negative value never looks."""
        with self._work:
            self._apply(self.configs, first=True)
            if self.poll_seconds < 0:
                log.warning("--file_system_poll_wait_seconds=%g: base paths are never polled, so no version will "
                            "load (TF Serving waits for one forever)", self.poll_seconds)
            else:
                self._poll_all()
            failed = [m for m in self.models.values() if not m.loaded and m.states]
            if failed:
                details = ", ".join(
                    f"{{name: {m.name} version: {v}}} due to error: {s.code.name}: {s.message}"
                    for m in failed for v, s in sorted(m.states.items()) if s.message)
                raise StartupFailure(f"{len(failed)} model(s) did not become available: {{{details}}}")
        if self.poll_seconds > 0:
            self._spawn("version-poller", self.poll_seconds, self._poll_locked)
        if self.config_file and self.config_poll_seconds > 0:
            self._spawn("config-poller", self.config_poll_seconds, self.reload_from_file)

    def _spawn(self, name: str, every: float, work) -> None:
        def loop():
            while not self._stopping.wait(every):
                try:
                    work()
                except Exception:  # keep polling whatever happens on disk
                    log.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_locked(self) -> None:
        with self._work:
            self._poll_all()

    def _poll_all(self) -> None:
        for model in list(self.models.values()):
            if not model.versions_on_disk() and not model.loaded:
                log.warning("No versions of servable %s found under base path %s", model.name,
                            model.config.base_path)
            model.poll()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for model in self.models.values():
            model.stop()

    # -- config -------------------------------------------------------------------------------------------------

    def reload_from_file(self) -> None:
        """--model_config_file_poll_wait_seconds: read the file again and apply it when it changed; a file that
        cannot be read or applied is logged and the running config kept (Server::PollFilesystemAndReloadConfig)."""
        try:
            configs = read_model_config(self.config_file)
        except ValueError as error:
            log.error("Failed to read ModelServerConfig file: %s", error)
            return
        if configs == self.configs:
            return
        try:
            self.reload(configs)
        except StartupFailure as error:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error)

    def reload(self, configs: list[ModelConfig]) -> None:
        """Apply a new config (HandleReloadConfigRequest's meaning): models added are loaded, models dropped
        unloaded, new policies and labels take effect; StartupFailure (the config unchanged) for labels TF Serving
        would refuse."""
        with self._work:
            self._apply(configs, first=False)
            self._poll_all()

    def _apply(self, configs: list[ModelConfig], first: bool) -> None:
        labels = self._check_labels(configs, first)
        models = {}
        for config in configs:
            model = self.models.get(config.name) or self.gone.pop(config.name, None)
            if model is None:
                model = ModelVersions(config, self.session_config, self.policy, self._stopping)
            model.config = config
            models[config.name] = model
        dropped = [m for name, m in self.models.items() if name not in models]
        self.configs, self.labels = list(configs), labels
        for model in dropped:
            model.unload_all()
            self.gone[model.name] = model
            log.info("model %s left the config: its versions are unloaded", model.name)
        self.models = models

    def _check_labels(self, configs: list[ModelConfig], first: bool) -> dict[str, dict[str, int]]:
        """The label map a config asks for, refused as UpdateModelVersionLabelMap refuses it: a label may name only
        an available version, unless --allow_version_labels_for_unavailable_models and the label is new (or keeps
        its version). At start nothing is available yet, so labels need that flag there."""
        labels: dict[str, dict[str, int]] = {}
        for config in configs:
            model = None if first else self.models.get(config.name)
            for label, version in config.labels:
                existing = self.labels.get(config.name, {}).get(label)
                allowed = self.policy.allow_labels_for_unavailable and (existing is None or existing == version)
                available = model is not None and version in model.loaded
                if not allowed and not available:
                    raise StartupFailure(f"Request to assign label to version {version} of model {config.name}, "
                                         "which is not currently available for inference")
                labels.setdefault(config.name, {})[label] = version
        return labels

    # -- requests -----------------------------------------------------------------------------------------------

    def model(self, name: str) -> ModelVersions:
        model = self.models.get(name)
        if model is None:
            raise ServingFailure(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return model

    def resolve(self, name: str, version: int | None, label: str | None) -> int | None:
        """The version a ModelSpec names: its version, its label's version, or None for the latest."""
        if not name:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if label is None:
            return version
        found = self.labels.get(name, {}).get(label)
        if found is None:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return found

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request, counted as in use until `release`; NOT_FOUND or INVALID_ARGUMENT as TF
        Serving answers."""
        version = self.resolve(name, version, label)
        return self.model(name).acquire(version)

    def states(self) -> dict[tuple[str, int], VersionState]:
        """(model, version) -> state of every version seen, for status and metrics."""
        models = [*self.models.values(), *self.gone.values()]
        return {(m.name, v): s for m in models for v, s in list(m.states.items())}

    def available(self) -> bool:
        return any(m.loaded for m in self.models.values())
