"""Server-side request batching for `alexnet-tf serve`, with TF Serving's semantics and its configuration file.

Concurrent requests to the same model version, signature and output filter are queued as tasks; a batch thread
takes the oldest batch when it is full or its first task has waited `batch_timeout_micros`, concatenates the inputs
along dimension 0 (padded up to the next of `allowed_batch_sizes` by repeating the first row), runs it once, and
hands each task its slice of the outputs. As in TF Serving, a task larger than `max_batch_size` is refused with
INVALID_ARGUMENT; with `enable_large_batch_splitting`, batches hold `max_execution_batch_size` rows (default
`max_batch_size`) and a larger task is split across them, its first part filling the open batch; a task that finds
`max_enqueued_batches` batches waiting gets UNAVAILABLE; a batch whose run fails fails every request in it.

The configuration is the BatchingParameters text proto TF Serving reads (`--batching_parameters_file`, the file
the Docker image ships as serving/batching.config), parsed with protobuf's own text-format parser against the
message's field numbers from TF Serving's session_bundle_config.proto.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_WRAPPED = {  # name -> (field number, wrapper type) in tensorflow.serving.BatchingParameters
    "max_batch_size": (1, "Int64Value"), "batch_timeout_micros": (2, "Int64Value"),
    "max_enqueued_batches": (3, "Int64Value"), "num_batch_threads": (4, "Int64Value"),
    "thread_pool_name": (5, "StringValue"), "enable_large_batch_splitting": (8, "BoolValue"),
    "max_execution_batch_size": (9, "Int64Value"),
}


def _message_class():
    """tensorflow.serving.BatchingParameters, built from its descriptor (tensorflow-serving-api does not ship it)."""
    proto = descriptor_pb2.FileDescriptorProto(name="alexnet_tf/batching_parameters.proto",
                                               package="tensorflow.serving", syntax="proto3",
                                               dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for name, (number, wrapper) in _WRAPPED.items():
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching options, with its defaults (SharedBatchScheduler::QueueOptions)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    @property
    def batch_size(self) -> int:
        """Rows one batch may hold: max_execution_batch_size when splitting (TF Serving ignores it otherwise)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def __post_init__(self):
        problems = [
            (self.max_batch_size >= 1, "max_batch_size must be >= 1"),
            (self.batch_timeout_micros >= 0, "batch_timeout_micros must be >= 0"),
            (self.max_enqueued_batches >= 1, "max_enqueued_batches must be >= 1"),
            (self.num_batch_threads >= 1, "num_batch_threads must be >= 1"),
            (list(self.allowed_batch_sizes) == sorted(set(self.allowed_batch_sizes)),
             "allowed_batch_sizes must be increasing"),
            (self.max_execution_batch_size is None or 1 <= self.max_execution_batch_size <= self.max_batch_size,
             "max_execution_batch_size must be between 1 and max_batch_size"),
            (not self.allowed_batch_sizes or self.allowed_batch_sizes[-1] == self.batch_size,
             "the last allowed_batch_sizes entry must equal "
             + ("max_execution_batch_size" if self.batch_size != self.max_batch_size else "max_batch_size")),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(f"batching parameters: {message}")

    @classmethod
    def parse(cls, text: str) -> BatchingParameters:
        """From the text format TF Serving reads; raise ValueError naming the problem."""
        try:
            message = text_format.Parse(text, _message_class()())
        except text_format.ParseError as error:
            raise ValueError(f"batching parameters: {error}") from None
        values = {name: getattr(message, name).value for name in _WRAPPED
                  if name in cls.__dataclass_fields__ and message.HasField(name)}
        return cls(**values, allowed_batch_sizes=tuple(message.allowed_batch_sizes),
                   pad_variable_length_inputs=message.pad_variable_length_inputs)

    @classmethod
    def read(cls, path: str | pathlib.Path) -> BatchingParameters:
        path = pathlib.Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"--batching_parameters_file {path}: {error.strerror}") from None
        try:
            return cls.parse(text)
        except ValueError as error:
            raise ValueError(f"--batching_parameters_file {path}: {error}") from None


class BatchingFailure(Exception):
    """A task refused by the batcher, with TF Serving's status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class _Task:
    def __init__(self, inputs: dict[str, np.ndarray], size: int):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class _Queue:
    """The batches of one (servable, signature, output filter): the first may still be filling."""

    def __init__(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self.run = run
        self.batches: collections.deque[list[_Task]] = collections.deque()
        self.opened: collections.deque[float] = collections.deque()  # when each batch's first task arrived


class Batcher:
    """Batches tasks per key with `num_batch_threads` threads; `submit` blocks until the task's outputs are ready."""

    def __init__(self, parameters: BatchingParameters, on_batch: Callable[[int, int], None] | None = None):
        self.parameters = parameters
        self.on_batch = on_batch  # (rows run, rows padded) of each batch, for metrics
        self._queues: dict[object, _Queue] = {}
        self._lock = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, key, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
               inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `inputs` (every value batch-major) as part of batches of the queue `key`; return its outputs."""
        size = int(next(iter(inputs.values())).shape[0])
        limit = self.parameters.max_batch_size
        if size > limit:  # without splitting, limit is also the batch size
            raise BatchingFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"Task size {size} is larger than maximum input batch size {limit}")
        with self._lock:
            if self._stopped:
                raise BatchingFailure(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            queue = self._queues.setdefault(key, _Queue(run))
            tasks, start = [], 0
            for part in self._split(queue, size):
                tasks.append(_Task({k: v[start : start + part] for k, v in inputs.items()}, part))
                start += part
            if not self._place(queue, tasks):
                raise BatchingFailure(grpc.StatusCode.UNAVAILABLE,
                                      "The batch scheduling queue to which this task was submitted is full")
            self._lock.notify_all()
        for task in tasks:
            task.done.wait()
        errors = [task.error for task in tasks if task.error is not None]
        if errors:
            raise errors[0]
        return {name: np.concatenate([task.outputs[name] for task in tasks]) for name in tasks[0].outputs}

    def _split(self, queue: _Queue, size: int) -> list[int]:
        """Row counts of a task's parts: whole; or, with splitting, a task that does not fit the open batch first
        fills it, the rest goes in full batches (TF Serving's SharedBatchScheduler with split_input_task_func)."""
        limit = self.parameters.batch_size
        room = limit - sum(t.size for t in queue.batches[-1]) if queue.batches else 0
        if not self.parameters.enable_large_batch_splitting or size <= room:
            return [size]
        parts = [room] if room > 0 else []
        left = size - sum(parts)
        return parts + [min(limit, left - start) for start in range(0, left, limit)]

    def _place(self, queue: _Queue, tasks: list[_Task]) -> bool:
        """Put the tasks into the open batch and new ones; False (nothing placed) when the queue would overflow."""
        limit = self.parameters.batch_size
        sizes = [sum(t.size for t in batch) for batch in queue.batches]
        new_batches, room = 0, limit - sizes[-1] if sizes else 0
        for task in tasks:
            if task.size > room:
                new_batches, room = new_batches + 1, limit
            room -= task.size
        if len(queue.batches) + new_batches > self.parameters.max_enqueued_batches:
            return False
        now = time.monotonic()
        for task in tasks:
            filled = sum(t.size for t in queue.batches[-1]) if queue.batches else limit
            if filled + task.size > limit:
                queue.batches.append([])
                queue.opened.append(now)
            queue.batches[-1].append(task)
        return True

    def _ready(self) -> tuple[_Queue, list[_Task]] | float | None:
        """A batch to run (full, behind another, past its timeout, or any once stopping), else the seconds until
        one is due."""
        now, wait = time.monotonic(), None
        timeout = self.parameters.batch_timeout_micros / 1e6
        for queue in self._queues.values():
            if not queue.batches:
                continue
            full = sum(t.size for t in queue.batches[0]) >= self.parameters.batch_size
            if full or len(queue.batches) > 1 or self._stopped or now - queue.opened[0] >= timeout:
                queue.opened.popleft()
                return queue, queue.batches.popleft()
            due = queue.opened[0] + timeout - now
            wait = due if wait is None else min(wait, due)
        return wait

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    ready = self._ready()
                    if isinstance(ready, tuple):
                        break
                    if self._stopped:  # and nothing queued is left
                        return
                    self._lock.wait(ready)
            self._run(*ready)

    def _run(self, queue: _Queue, tasks: list[_Task]) -> None:
        try:
            self._run_together(queue, tasks)
        except Exception as error:  # noqa: BLE001 - handed to the waiting requests
            # As TF Serving's BatchingSession::ProcessBatch: a failed run fails every request of its batch (one
            # corrupt image fails the images merged with it; a client that cannot accept that retries alone).
            for task in tasks:
                task.error = error
        finally:
            for task in tasks:
                task.done.set()

    def _run_together(self, queue: _Queue, tasks: list[_Task]) -> None:
        """One run of the tasks' inputs concatenated (padded up to an allowed batch size); each task its slice."""
        rows = sum(task.size for task in tasks)
        target = next((s for s in self.parameters.allowed_batch_sizes if s >= rows), rows)
        inputs = {}
        for name in tasks[0].inputs:
            merged = np.concatenate([task.inputs[name] for task in tasks])
            if target > rows:  # pad with copies of the first row; their outputs are dropped
                merged = np.concatenate([merged, np.repeat(merged[:1], target - rows, axis=0)])
            inputs[name] = merged
        outputs = queue.run(inputs)
        if self.on_batch is not None:
            self.on_batch(rows, target - rows)
        start = 0
        for task in tasks:
            task.outputs = {name: value[start : start + task.size] for name, value in outputs.items()}
            start += task.size

    def stop(self) -> None:
        """Take no new requests; run every queued batch at once (their requests were admitted), then end."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
