"""tensorflow_model_server's flags (every one of model_servers/main.cc), parsed as TensorFlow's command-line flag
parser parses them, so that a command line that works here works on the Docker image and one it would reject is
rejected here: a value only after "=" (`--port=8500`), booleans bare or `=true` / `=false`, integers and floats
whole. Each flag either has its meaning on this server or, where it cannot (TLS, TPUs, TF Lite, GPUs), a one-line
note at start-up saying so."""

from __future__ import annotations

import dataclasses
import os
import re

from alexnet_tf.cli.common import UserError


@dataclasses.dataclass(frozen=True)
class TfServingFlag:
    """One flag of main.cc: its type, TF Serving's default, and (for one without a meaning here) why not."""

    name: str
    kind: str  # "int32", "int64", "float", "bool" or "string", as main.cc declares it
    default: object
    no_effect: str = ""  # empty: implemented on this server

    def parse(self, text: str):
        """The value of `--name=text`, or UserError with TensorFlow's own complaint."""
        value = {"bool": _bool, "int32": _int, "int64": _int, "float": _float, "string": str}[self.kind](text)
        if value is None:
            raise UserError(f"Couldn't interpret value ={text} for flag {self.name} (a {self.kind}"
                            + (": true or false" if self.kind == "bool" else "") + "); tensorflow_model_server "
                            "exits with its usage for this")
        return value


def _bool(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text)  # exactly these, as TensorFlow's ParseBoolFlag


def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"\s*[+-]?\d+", text) else None  # sscanf("%d%c") == 1: nothing after it


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

FLAGS = {flag.name: flag for flag in (
    TfServingFlag("port", "int32", 8500),
    TfServingFlag("grpc_socket_path", "string", ""),
    TfServingFlag("rest_api_port", "int32", 0),
    TfServingFlag("rest_api_num_threads", "int32", 4 * _CPUS,
                  "each REST connection has its own thread here; admission and batching bound the model runs"),
    TfServingFlag("rest_api_timeout_in_ms", "int32", 30000),
    TfServingFlag("rest_api_enable_cors_support", "bool", False),
    TfServingFlag("enable_batching", "bool", False),
    TfServingFlag("allow_version_labels_for_unavailable_models", "bool", False),
    TfServingFlag("batching_parameters_file", "string", ""),
    TfServingFlag("enable_per_model_batching_parameters", "bool", False,
                  "batching_params.pbtxt inside a SavedModel is not read; --batching_parameters_file applies to all"),
    TfServingFlag("model_config_file", "string", ""),
    TfServingFlag("model_config_file_poll_wait_seconds", "int32", 0),
    TfServingFlag("model_name", "string", "default"),
    TfServingFlag("model_base_path", "string", ""),
    TfServingFlag("num_load_threads", "int32", 0, "versions load one at a time, as TF Serving with 0"),
    TfServingFlag("num_unload_threads", "int32", 0, "versions unload one at a time, as TF Serving with 0"),
    TfServingFlag("max_num_load_retries", "int32", 5),
    TfServingFlag("load_retry_interval_micros", "int64", 60_000_000),
    TfServingFlag("file_system_poll_wait_seconds", "int32", 1),
    TfServingFlag("flush_filesystem_caches", "bool", True, "there are no file system caches to flush here"),
    TfServingFlag("tensorflow_session_parallelism", "int64", 0),
    TfServingFlag("tensorflow_session_config_file", "string", ""),
    TfServingFlag("tensorflow_intra_op_parallelism", "int64", 0),
    TfServingFlag("tensorflow_inter_op_parallelism", "int64", 0),
    TfServingFlag("use_alts_credentials", "bool", False, "this server speaks plain gRPC only (no ALTS)"),
    TfServingFlag("ssl_config_file", "string", "", "this server speaks plain gRPC only (no TLS)"),
    TfServingFlag("platform_config_file", "string", "", "the platform is always TensorFlow's SavedModel here"),
    TfServingFlag("per_process_gpu_memory_fraction", "float", 0.0, "this server runs on the CPU"),
    TfServingFlag("saved_model_tags", "string", "serve"),
    TfServingFlag("grpc_channel_arguments", "string", ""),
    TfServingFlag("grpc_max_threads", "int32", 4 * _CPUS),
    TfServingFlag("enable_model_warmup", "bool", True),
    TfServingFlag("num_request_iterations_for_warmup", "int32", 0),
    TfServingFlag("version", "bool", False),
    TfServingFlag("monitoring_config_file", "string", ""),
    TfServingFlag("remove_unused_fields_from_bundle_metagraph", "bool", True,
                  "the MetaGraphDef is kept whole (a memory saving only)"),
    TfServingFlag("prefer_tflite_model", "bool", False, "model.tflite files are not served here"),
    TfServingFlag("num_tflite_pools", "int32", _CPUS, "model.tflite files are not served here"),
    TfServingFlag("num_tflite_interpreters_per_pool", "int32", 1, "model.tflite files are not served here"),
    TfServingFlag("enable_signature_method_name_check", "bool", False,
                  "Classify and Regress are not served here, so no method name is checked"),
    TfServingFlag("xla_cpu_compilation_enabled", "bool", False,
                  "the exports hold no XLA-compiled functions; the Session runs them as TF Serving does without"),
    TfServingFlag("xla_gpu_compilation_enabled", "bool", False, "this server runs on the CPU"),
    TfServingFlag("enable_profiler", "bool", True, "no profiler service is started here"),
    TfServingFlag("thread_pool_factory_config_file", "string", "",
                  "model runs use the Session's own thread pools (--tensorflow_*_parallelism)"),
    TfServingFlag("mixed_precision", "string", ""),
    TfServingFlag("skip_initialize_tpu", "bool", False, "there is no TPU here"),
    TfServingFlag("enable_grpc_healthcheck_service", "bool", False),
    TfServingFlag("enable_serialization_as_tensor_content", "bool", False),
)}
"""Every flag of tensorflow_model_server 2.21's main.cc, with server.h's defaults."""


def parse(tokens: list[str]) -> dict[str, object]:
    """The TF Serving flags among `tokens` (what argparse did not take), by name; UserError for a token TF Serving
    would not take as this server reads it: an unknown one, or a value after a space (tensorflow_model_server would
    print "unknown argument" and run without it)."""
    values: dict[str, object] = {}
    for token in tokens:
        name, equals, text = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        flag = FLAGS.get(name)
        if flag is None:
            raise UserError(f"unrecognized argument {token!r} (see alexnet-tf serve --help; TF Serving's own flags "
                            "are --name=value)")
        if not equals:
            if flag.kind != "bool":
                raise UserError(f"{token} needs its value after '=' ({token}=VALUE), as tensorflow_model_server "
                                f"reads it (it would ignore '{token}' and the word after it)")
            text = "true"
        values[name] = flag.parse(text)
    return values


def notes(values: dict[str, object]) -> list[str]:
    """One line for each flag given that has no meaning on this server."""
    return [f"note: --{name}={_show(value)} has no effect on alexnet-tf serve: {FLAGS[name].no_effect}"
            for name, value in values.items() if FLAGS[name].no_effect]


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
