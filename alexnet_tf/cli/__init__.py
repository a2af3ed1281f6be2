"""`alexnet-tf`: the command line, and the composition root (the only part of alexnet_tf that imports export/ and
serving/).

One module per command, each a parser (`add_parser`) and a runner (`run`) that makes one call into the library;
this module only dispatches. TensorFlow is imported inside the runners, so `alexnet-tf --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alexnet_tf.cli import (
    embed,
    evaluate,
    export,
    figures,
    import_weights,
    predict,
    prepare,
    serve,
    summary,
    train,
)
from alexnet_tf.cli.common import UserError, quiet_tensorflow
from alexnet_tf.process.disk import WriteError

COMMANDS = (summary, prepare, train, evaluate, import_weights, export, serve, predict, figures, embed)
"""The commands, in the order `alexnet-tf --help` lists them."""

__all__ = ["COMMANDS", "UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet-tf",
        description="The 2012 two-tower AlexNet (Krizhevsky, Sutskever & Hinton) on TensorFlow 2 / Keras 3: "
        "prepare data, train, evaluate, export a SavedModel for TF Serving, serve it and query it.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up and info lines (hidden by default)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; user errors and failed writes (full disk, read-only) print one line to stderr and
    return 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_tf_serving_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # `serve` parses tensorflow_model_server's flags from these, in TensorFlow's syntax
    quiet_tensorflow(args.verbose)
    if hasattr(sys.stdout, "reconfigure"):  # progress reaches a log file or a pipe as it happens
        sys.stdout.reconfigure(line_buffering=True)
    try:
        args.run(args)
    except (UserError, WriteError) as error:  # WriteError: a full disk or read-only directory, nothing half-written
        print(f"alexnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
