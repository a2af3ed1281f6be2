"""Prometheus metrics of the local server, in Prometheus' text format at TF Serving's path, with TF Serving's
metric names where it has them (its monitoring names with "/" turned into ":", as its exporter does).

    :tensorflow:serving:request_count{model_name,status}                      counter, as TF Serving (gRPC Predict,
                                                                              every REST request)
    :tensorflow:serving:request_latency{model_name,API,entrypoint}            histogram (microseconds), as TF Serving
    :tensorflow:serving:batching_session:input_batch_size{thread_pool_name}   histogram, as TF Serving (each request)
    :tensorflow:serving:batching_session:processed_batch_size{...}            histogram (after padding), as TF Serving
    :tensorflow:serving:batching_session:padding_size{...}                    histogram, as TF Serving
    :alexnet_tf:serving:request_count{model_name,version,signature,status}    counter (TF Serving has no such split)
    :alexnet_tf:serving:model_version_state{model_name,version,state}         gauge, 1 for each version's state

Also the MonitoringConfig text proto TF Serving reads (`--monitoring_config_file`), parsed by protobuf.
"""

from __future__ import annotations

import bisect
import dataclasses
import pathlib
import threading
from collections.abc import Callable, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DEFAULT_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))  # TF Serving: Buckets::Exponential(10, 1.8, 33)
BATCH_BUCKETS = tuple(float(2**i) for i in range(15))  # 1, 2, 4, ... 16384


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    def escape(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    parts = [f'{n}="{escape(v)}"' for n, v in zip(names, values)] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


class _Counter:
    def __init__(self, name: str, help_text: str, labels: Sequence[str], kind: str = "counter"):
        self.name, self.help, self.labels, self.kind = name, help_text, tuple(labels), kind
        self.values: dict[tuple, float] = {}

    def add(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        return out + [f"{self.name}{_label_text(self.labels, k)} {v:g}" for k, v in sorted(self.values.items())]


class _Histogram:
    def __init__(self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]):
        self.name, self.help, self.labels, self.buckets = name, help_text, tuple(labels), tuple(buckets)
        self.values: dict[tuple, list] = {}  # labels -> [counts per bucket (+Inf last), sum, count]

    def observe(self, value: float, *labels: str) -> None:
        cell = self.values.setdefault(labels, [[0] * (len(self.buckets) + 1), 0.0, 0])
        cell[0][bisect.bisect_left(self.buckets, value)] += 1
        cell[1] += value
        cell[2] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total, count) in sorted(self.values.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, float("inf")), counts):
                cumulative += n
                le = 'le="' + ("+Inf" if bound == float("inf") else repr(float(bound))) + '"'
                out.append(f"{self.name}_bucket{_label_text(self.labels, labels, le)} {cumulative}")
            out.append(f"{self.name}_sum{_label_text(self.labels, labels)} {total:g}")
            out.append(f"{self.name}_count{_label_text(self.labels, labels)} {count}")
        return out


class Metrics:
    """The server's counters and histograms; thread-safe; `render()` gives the text a Prometheus scrape reads."""

    def __init__(self, model_states: Callable[[], dict[tuple[str, int], str]] | None = None):
        self._lock = threading.Lock()
        self._model_states = model_states
        self.request_count = _Counter(":tensorflow:serving:request_count", "The total number of requests.",
                                      ("model_name", "status"))
        self.requests = _Counter(":alexnet_tf:serving:request_count",
                                 "Requests by model version, signature and status.",
                                 ("model_name", "version", "signature", "status"))
        self.request_latency = _Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
        batch = ("thread_pool_name",)
        self.input_batch_size = _Histogram(":tensorflow:serving:batching_session:input_batch_size",
                                           "Tracks the batch size distribution on the inputs by model.", batch,
                                           BATCH_BUCKETS)
        self.processed_batch_size = _Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                               "Tracks the batch size distribution on processing by model.", batch,
                                               BATCH_BUCKETS)
        self.padding_size = _Histogram(":tensorflow:serving:batching_session:padding_size",
                                       "Tracks the padding size distribution on batches by model.", batch,
                                       (0.0, *BATCH_BUCKETS))

    def record_request(self, model: str, version: int | None, signature: str, status: str, seconds: float,
                       entrypoint: str) -> None:
        """One Predict call: TF Serving's request_count and (when OK, as TF Serving) its latency, and our split."""
        with self._lock:
            self.request_count.add(model, status)
            self.requests.add(model, "" if version is None else str(version), signature, status)
            if status == "OK":
                self.request_latency.observe(seconds * 1e6, model, "predict", entrypoint)

    def count_request(self, model: str, status: str) -> None:
        """Another API call TF Serving counts in request_count: every REST request (status and metadata GETs too);
        over gRPC only Predict, Classify and Regress count (prediction_service_impl.cc, http_server.cc)."""
        with self._lock:
            self.request_count.add(model, status)

    def record_input(self, rows: int, inputs: int = 1, pool: str = "batch_threads") -> None:
        """A request entering the batcher: input_batch_size is each request's size, once per input tensor, as
        BatchingSession::ComputeInputSize records it (not the merged batch's)."""
        with self._lock:
            for _ in range(inputs):
                self.input_batch_size.observe(rows, pool)

    def record_batch(self, rows: int, padding: int, pool: str = "batch_threads") -> None:
        """A batch run: its size after padding, and the padding."""
        with self._lock:
            self.processed_batch_size.observe(rows + padding, pool)
            self.padding_size.observe(padding, pool)

    def render(self) -> str:
        with self._lock:
            lines = []
            for metric in (self.request_count, self.request_latency, self.input_batch_size,
                           self.processed_batch_size, self.padding_size, self.requests):
                lines += metric.lines()
        states = _Counter(":alexnet_tf:serving:model_version_state",
                          "1 for the state each model version is in (LOADING, AVAILABLE, UNLOADING, END).",
                          ("model_name", "version", "state"), kind="gauge")
        for (model, version), state in sorted((self._model_states or dict)().items()):
            states.add(model, str(version), state)
        lines += states.lines()
        return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """TF Serving's MonitoringConfig: whether Prometheus metrics are served, and where (on the REST port)."""

    enabled: bool = True
    path: str = DEFAULT_PATH

    @classmethod
    def read(cls, path: str | pathlib.Path) -> MonitoringConfig:
        path = pathlib.Path(path)
        try:
            message = text_format.Parse(path.read_text(), _monitoring_config_class()())
        except (OSError, text_format.ParseError) as error:
            raise ValueError(f"--monitoring_config_file {path}: {error}") from None
        prometheus = message.prometheus_config
        return cls(prometheus.enable, prometheus.path or DEFAULT_PATH)


def _monitoring_config_class():
    """tensorflow.serving.MonitoringConfig from tensorflow_serving/config/monitoring_config.proto's field numbers
    (tensorflow-serving-api does not ship the generated module)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="alexnet_tf/monitoring_config.proto",
                                               package="tensorflow.serving", syntax="proto3")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
