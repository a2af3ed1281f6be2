"""`alexnet-tf serve`: the local TF-Serving-compatible server over an export directory or a model config file."""

from __future__ import annotations

from alexnet_tf.cli import serve_flags, tf_serving_flags
from alexnet_tf.cli.common import UserError

NAME = "serve"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        allow_abbrev=False,  # a TF Serving flag must never be taken for a prefix of one of ours
        help="serve an export directory with TF Serving's gRPC and REST API (no Docker needed)",
        description="Serve MODEL_BASE_PATH/<version>/ (or the models of --model_config_file=FILE) with TF "
        "Serving's gRPC services (PredictionService, ModelService; health with "
        "--enable_grpc_healthcheck_service=true) and REST API, loading and unloading versions as "
        "tensorflow_model_server does. Binds to 127.0.0.1 unless --host says otherwise; stops cleanly on SIGTERM "
        "or Ctrl-C. Every flag of tensorflow_model_server is accepted in its own syntax (--name=value; booleans "
        "bare or =true/=false), so the Dockerfile's arguments run unchanged: --port, --rest_api_port, "
        "--model_name, --model_base_path, --model_config_file, --model_config_file_poll_wait_seconds, "
        "--enable_batching, --batching_parameters_file, --file_system_poll_wait_seconds, --max_num_load_retries, "
        "--load_retry_interval_micros, --allow_version_labels_for_unavailable_models, "
        "--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism, --tensorflow_session_parallelism, "
        "--tensorflow_session_config_file, --monitoring_config_file, --enable_grpc_healthcheck_service, "
        "--enable_serialization_as_tensor_content, --mixed_precision=bfloat16, --saved_model_tags, "
        "--enable_model_warmup, --num_request_iterations_for_warmup, --grpc_socket_path, "
        "--grpc_channel_arguments, --grpc_max_threads, --rest_api_timeout_in_ms, --rest_api_enable_cors_support, "
        "--version; the others (TLS, TPU, GPU, TF Lite, ...) print a note that they have no effect here. "
        "docs/serving.md has the table.",
    )
    serve_flags.add_flags(parser)
    parser.set_defaults(run=run, takes_tf_serving_flags=True)


def run(args) -> None:
    import logging

    tfs = tf_serving_flags.parse(args.extra)
    if tfs.get("version"):
        import tensorflow as tf
        from tensorflow_serving import apis  # noqa: F401 - the installed tensorflow-serving-api

        from alexnet_tf import __version__

        print(f"alexnet-tf serve {__version__} (TF Serving's API as tensorflow-serving-api)\n"
              f"TensorFlow Library: {tf.__version__}")
        return
    for note in tf_serving_flags.notes(tfs):
        print(note, flush=True)
    from serving.server import LocalServer, StartupFailure

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF1-loader deprecation notes are not for users
    options = serve_flags.server_options(args, tfs)
    models, config_file = serve_flags.models(args, tfs)
    try:
        server = LocalServer(options=options, models=models, config_file=config_file).start()
    except StartupFailure as error:
        raise UserError(f"the server did not start (tensorflow_model_server would exit too): {error}") from None
    except (OSError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot start the server: {error}") from None
    batched = ""
    batching = options.batching
    if batching:
        split = (f", requests of up to {batching.max_batch_size} split across batches"
                 if batching.enable_large_batch_splitting else "")
        batched = f", batching up to {batching.batch_size} (timeout {batching.batch_timeout_micros} us{split})"
    threads = server.manager.session_config.intra_op_parallelism_threads
    served = ", ".join(f"{m.name} {sorted(m.loaded)} from {m.config.base_path}"
                       for m in server.manager.models.values())
    where = [f"gRPC {args.host}:{server.port}"] if server.port else []
    where += [f"gRPC unix:{options.grpc_socket_path}"] if options.grpc_socket_path else []
    where += [f"REST http://{args.host}:{server.rest_port}"] if server.rest_port else []
    print(f"serving {served}: {', '.join(where)}{batched}; {options.concurrent_runs} model runs at once, "
          f"{threads} intra-op thread(s) each", flush=True)
    server.wait()
