"""`alexnet-tf serve`: the local TF-Serving-compatible server over an export directory."""

from __future__ import annotations

from alexnet_tf.cli import serve_flags
from alexnet_tf.cli.common import UserError

NAME = "serve"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="serve an export directory with TF Serving's gRPC and REST API (no Docker needed)",
        description="Serve MODEL_BASE_PATH/<version>/ (the newest version; newer ones are picked up while running) "
        "with TF Serving's gRPC services (PredictionService, ModelService, health) and REST API. Binds to "
        "127.0.0.1 unless --host says otherwise; stops cleanly on SIGTERM or Ctrl-C. TF Serving's own flags "
        "(--model_base_path, --model_name, --port, --rest_api_port, --enable_batching, --batching_parameters_file, "
        "--model_config_file, --tensorflow_intra_op_parallelism, ...) are accepted as they are, so the "
        "Dockerfile's arguments run unchanged.",
    )
    serve_flags.add_flags(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    import logging

    from serving.server import LocalServer

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF1-loader deprecation notes are not for users
    options = serve_flags.server_options(args)
    name, base_path = serve_flags.serve_target(args)
    try:
        server = LocalServer(base_path, name, options)
    except (OSError, RuntimeError) as error:
        raise UserError(f"cannot start the server: {error}") from None
    server.start()
    batched = ""
    batching = options.batching
    if batching:
        split = (f", requests of up to {batching.max_batch_size} split across batches"
                 if batching.enable_large_batch_splitting else "")
        batched = f", batching up to {batching.batch_size} (timeout {batching.batch_timeout_micros} us{split})"
    threads = server.manager.config.intra_op_parallelism_threads
    print(f"serving {name} from {base_path}: gRPC {args.host}:{server.port}"
          + (f", REST http://{args.host}:{server.rest_port}" if server.rest_port else "") + batched
          + f"; {options.concurrent_runs} model runs at once, {threads} intra-op thread(s) each", flush=True)
    server.wait()
