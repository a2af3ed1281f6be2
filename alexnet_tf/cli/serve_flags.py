"""The flags of `alexnet-tf serve`: our own (hyphenated, argparse's syntax) beside every one of tensorflow_model_server
(underscored, TensorFlow's syntax: `tf_serving_flags`), and their translation into `serving.server.ServerOptions`.
Where both name one setting, the TF Serving flag wins."""

from __future__ import annotations

import pathlib

from alexnet_tf.cli.common import UserError


def add_flags(parser) -> None:
    parser.add_argument("--model-base-path", default="export/alexnet",
                        help="directory of integer versions (TF Serving: --model_base_path=DIR)")
    parser.add_argument("--model-name", default="alexnet", help="(TF Serving: --model_name=NAME)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (0.0.0.0 for every interface, as TF Serving always binds)")
    parser.add_argument("--rest-port", type=int, default=8501,
                        help="REST port (-1: no REST; 0: any free port; TF Serving: --rest_api_port=PORT, 0 for none)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="model runs at once, without batching")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before UNAVAILABLE")
    parser.add_argument("--max-request-mb", type=float, default=64.0, help="largest request accepted")
    parser.add_argument("--max-images-per-request", type=int, default=64,
                        help="images one request may hold (more: INVALID_ARGUMENT), so one request cannot take "
                        "the server's memory (default: 64)")
    parser.add_argument("--rest-timeout", type=float, default=30.0,
                        help="seconds a REST client may take to send its request (then 408; default: 30; TF "
                        "Serving: --rest_api_timeout_in_ms=MS)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to look for new versions (default 1; 0: once, at start; negative: never, "
                        "so nothing loads; TF Serving: --file_system_poll_wait_seconds=N, whole seconds)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                        help="DEBUG logs one line per request")


def models(args, tfs: dict):
    """(model configs, config file or None): --model_config_file's models, else the one model of
    --model_base_path / --model_name (a relative base path is taken from the working directory)."""
    from serving.model_config import read_model_config, single_model

    config_file = tfs.get("model_config_file")
    if config_file:
        try:
            return read_model_config(config_file), config_file
        except ValueError as error:
            raise UserError(f"--model_config_file={config_file}: {error}") from None
    name = tfs.get("model_name", args.model_name)
    base = pathlib.Path(tfs.get("model_base_path") or args.model_base_path)
    return single_model(name, base.absolute()), None


def batching_parameters(tfs: dict):
    """--enable_batching / --batching_parameters_file as BatchingParameters, or None."""
    from serving.batching import BatchingParameters

    path = tfs.get("batching_parameters_file")
    if not tfs.get("enable_batching"):
        if path:  # tensorflow_model_server refuses to start with this (server.cc)
            raise UserError(f"--batching_parameters_file={path} is set without setting --enable_batching to true")
        return None
    try:
        return BatchingParameters.read(path) if path else BatchingParameters()
    except ValueError as error:
        raise UserError(str(error)) from None


def threads(tfs: dict) -> tuple[int, int]:
    """(intra, inter) op threads: --tensorflow_intra/inter_op_parallelism, else --tensorflow_session_parallelism
    for both, as server.cc resolves them (all three at once is an error there)."""
    intra = tfs.get("tensorflow_intra_op_parallelism", 0)
    inter = tfs.get("tensorflow_inter_op_parallelism", 0)
    session = tfs.get("tensorflow_session_parallelism", 0)
    for name, value in (("intra_op", intra), ("inter_op", inter), ("session", session)):
        if value < 0:
            raise UserError(f"--tensorflow_{name}_parallelism={value}: expected 0 (auto) or a thread count")
    if intra > 0 and inter > 0 and session > 0:
        raise UserError("Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                        "--tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    if intra > 0 or inter > 0:
        return intra, inter
    return session, session


def server_options(args, tfs: dict):
    """The ServerOptions the flags ask for (UserError naming a bad flag or file)."""
    from serving.metrics import MonitoringConfig
    from serving.models import LoadPolicy
    from serving.server import ServerOptions

    rest_port = None if args.rest_port < 0 else args.rest_port
    if "rest_api_port" in tfs:
        rest_port = tfs["rest_api_port"] or None
    monitoring_file = tfs.get("monitoring_config_file")
    try:
        monitoring = MonitoringConfig.read(monitoring_file) if monitoring_file else MonitoringConfig()
    except ValueError as error:
        raise UserError(str(error)) from None
    intra, inter = threads(tfs)
    precision = tfs.get("mixed_precision", "")
    if precision not in ("", "bfloat16"):
        print(f"note: --mixed_precision={precision}: auto mixed precision is not supported. Valid option: bfloat16 "
              "(as TF Serving, served without it)")
        precision = ""
    retry_micros = tfs.get("load_retry_interval_micros", 60_000_000)
    port = tfs.get("port", 8500)
    if port == 0 and not tfs.get("grpc_socket_path"):
        raise UserError("At least one of --port or --grpc_socket_path must be set (--port=0 disables gRPC in TF "
                        "Serving)")
    return ServerOptions(
        host=args.host, port=port, rest_port=rest_port, max_concurrent=args.max_concurrent,
        max_queue=args.max_queue, max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        poll_seconds=tfs.get("file_system_poll_wait_seconds", args.poll_seconds),
        batching=batching_parameters(tfs), monitoring=monitoring, max_images=args.max_images_per_request,
        rest_timeout=tfs["rest_api_timeout_in_ms"] / 1000 if "rest_api_timeout_in_ms" in tfs else args.rest_timeout,
        intra_op_threads=intra, inter_op_threads=inter,
        tensor_content=tfs.get("enable_serialization_as_tensor_content", False),
        grpc_health=tfs.get("enable_grpc_healthcheck_service", False),
        config_poll_seconds=tfs.get("model_config_file_poll_wait_seconds", 0),
        load=LoadPolicy(max_num_load_retries=tfs.get("max_num_load_retries", 5),
                        load_retry_interval=max(0.0, retry_micros / 1e6),
                        allow_labels_for_unavailable=tfs.get("allow_version_labels_for_unavailable_models", False),
                        tags=tuple(t for t in tfs.get("saved_model_tags", "serve").split(",") if t) or ("serve",),
                        warmup=tfs.get("enable_model_warmup", True),
                        warmup_iterations=tfs.get("num_request_iterations_for_warmup", 0)),
        grpc_socket_path=tfs.get("grpc_socket_path", ""), grpc_channel_arguments=tfs.get("grpc_channel_arguments", ""),
        grpc_max_threads=tfs.get("grpc_max_threads", 0), cors=tfs.get("rest_api_enable_cors_support", False),
        session_config_file=tfs.get("tensorflow_session_config_file", ""), mixed_precision=precision)
