"""The flags of `alexnet-tf serve`: TF Serving's own spellings (so the Dockerfile's CMD runs unchanged) beside ours,
and their translation into `serving.server.ServerOptions`."""

from __future__ import annotations

from alexnet_tf.cli.common import UserError


def add_flags(parser) -> None:
    parser.add_argument("--model-base-path", "--model_base_path", dest="model_base_path", default="export/alexnet",
                        help="directory of integer versions")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default="alexnet")
    parser.add_argument("--model_config_file", "--model-config-file", dest="model_config_file", metavar="FILE",
                        help="TF Serving's ModelServerConfig (text proto) naming one model: its name and base_path")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (-1: no REST; 0: any free port)")
    parser.add_argument("--rest_api_port", type=int, metavar="PORT",
                        help="TF Serving's spelling of --rest-port, with its meaning of 0: no REST")
    parser.add_argument("--enable_batching", "--enable-batching", dest="enable_batching", nargs="?", const="true",
                        default="false", metavar="true|false",
                        help="merge concurrent requests into batches, as TF Serving does (default: false)")
    parser.add_argument("--batching_parameters_file", "--batching-parameters-file", dest="batching_parameters_file",
                        metavar="FILE", help="TF Serving's BatchingParameters text proto, e.g. serving/batching.config "
                        "(default with batching on: TF Serving's defaults)")
    parser.add_argument("--monitoring_config_file", "--monitoring-config-file", dest="monitoring_config_file",
                        metavar="FILE", help="TF Serving's MonitoringConfig (text proto): whether and where Prometheus "
                        "metrics are served on the REST port (default: on, at /monitoring/prometheus/metrics)")
    for kind, meaning in (("intra", "within one op"), ("inter", "across independent ops")):
        parser.add_argument(f"--tensorflow_{kind}_op_parallelism", dest=f"{kind}_op_threads", type=int, default=0,
                            metavar="N", help=f"TensorFlow threads {meaning}, as TF Serving's flag (default 0: auto"
                            + ("; here auto = cores / concurrent model runs, so concurrent runs share the cores)"
                               if kind == "intra" else ", TensorFlow's choice)"))
    parser.add_argument("--max-concurrent", type=int, default=2, help="model runs at once, without batching")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before UNAVAILABLE")
    parser.add_argument("--max-request-mb", type=float, default=64.0, help="largest request accepted")
    parser.add_argument("--max-images-per-request", type=int, default=64,
                        help="images one request may hold (more: INVALID_ARGUMENT), so one request cannot take "
                        "the server's memory (default: 64)")
    parser.add_argument("--rest-timeout", type=float, default=30.0,
                        help="seconds a REST client may take to send its request (then 408; default: 30)")
    parser.add_argument("--poll-seconds", "--file_system_poll_wait_seconds", dest="poll_seconds", type=float,
                        default=2.0, help="how often to look for new versions (0: once, at start; negative: never, "
                        "so nothing loads - as TF Serving)")
    parser.add_argument("--enable_serialization_as_tensor_content", dest="tensor_content", nargs="?",
                        const="true", default="false", metavar="true|false",
                        help="answer with packed TensorProto.tensor_content, as TF Serving with this flag (default: "
                        "false, the typed fields float_val, int_val, string_val, ...)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                        help="DEBUG logs one line per request")


def serve_target(args) -> tuple[str, str]:
    """(model name, base path), from --model_config_file when given (one model: this server serves one)."""
    if not args.model_config_file:
        return args.model_name, args.model_base_path
    from serving.models import read_model_config

    try:
        models = read_model_config(args.model_config_file)
    except ValueError as error:
        raise UserError(f"--model_config_file {args.model_config_file}: {error}") from None
    if len(models) != 1:
        raise UserError(f"--model_config_file {args.model_config_file}: lists {len(models)} models; "
                        "alexnet-tf serve serves one")
    return models[0]


def batching_parameters(args):
    """TF Serving's --enable_batching / --batching_parameters_file as BatchingParameters, or None."""
    from serving.batching import BatchingParameters

    if args.enable_batching.lower() not in ("true", "false", "1", "0"):
        raise UserError(f"--enable_batching={args.enable_batching}: expected true or false")
    if args.enable_batching.lower() not in ("true", "1"):
        if args.batching_parameters_file:
            print("note: --batching_parameters_file has no effect without --enable_batching=true (as in TF Serving)")
        return None
    try:
        return BatchingParameters.read(args.batching_parameters_file) if args.batching_parameters_file \
            else BatchingParameters()
    except ValueError as error:
        raise UserError(str(error)) from None


def server_options(args):
    """The ServerOptions the flags ask for (UserError naming a bad flag or file)."""
    from serving.metrics import MonitoringConfig
    from serving.server import ServerOptions

    for flag, threads in (("intra", args.intra_op_threads), ("inter", args.inter_op_threads)):
        if threads < 0:
            raise UserError(f"--tensorflow_{flag}_op_parallelism={threads}: expected 0 (auto) or a thread count")
    batching = batching_parameters(args)
    rest_port = None if args.rest_port < 0 else args.rest_port
    if args.rest_api_port is not None:
        rest_port = args.rest_api_port or None
    try:
        monitoring = MonitoringConfig.read(args.monitoring_config_file) if args.monitoring_config_file \
            else MonitoringConfig()
    except ValueError as error:
        raise UserError(str(error)) from None
    return ServerOptions(host=args.host, port=args.port, rest_port=rest_port,
                         max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                         max_request_bytes=int(args.max_request_mb * 1024 * 1024), poll_seconds=args.poll_seconds,
                         batching=batching, monitoring=monitoring, max_images=args.max_images_per_request,
                         rest_timeout=args.rest_timeout, intra_op_threads=args.intra_op_threads,
                         inter_op_threads=args.inter_op_threads, tensor_content=_switch(
                             "--enable_serialization_as_tensor_content", args.tensor_content))


def _switch(flag: str, value: str) -> bool:
    """A TF Serving boolean flag's value (true/false/1/0), or a UserError naming it."""
    if value.lower() not in ("true", "false", "1", "0"):
        raise UserError(f"{flag}={value}: expected true or false")
    return value.lower() in ("true", "1")
