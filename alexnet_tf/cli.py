"""`alexnet-tf`: the command line, and the composition root (the only module that imports export/ and serving/).

Each sub-command parses its arguments, then makes one call into the library. TensorFlow is imported only
inside the commands, so `alexnet-tf --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


class UserError(Exception):
    """A problem the user can fix (bad path, bad value): printed as one line, no traceback, exit status 2."""


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (CUDA probes on CPU hosts) hides what matters; errors still raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tower_devices(value: str):
    """--towers: 'auto' (one tower per GPU when there are two), 'none', or 'DEV_A,DEV_B'."""
    from alexnet_tf import placement

    if value == "none":
        return None
    if value == "auto":
        return placement.tower_devices()
    return placement.validate(value.split(","))


# === summary ===
def _add_summary(commands) -> None:
    parser = commands.add_parser(
        "summary",
        help="print the network's layer table: output shapes, parameters, towers",
        description="Print every layer of the two-tower network with its output shape, parameter count and tower, "
        "then the parameters per paper layer (conv1..fc8) and the total (60,965,224 for 1000 classes).",
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="width of fc8 (default: 1000)")
    parser.add_argument("--init", default="paper", choices=("paper", "he", "caffe"), help="weight init scheme")
    parser.add_argument("--lrn", default="paper", choices=("paper", "cuda-convnet", "caffe"), help="LRN constants")
    parser.add_argument("--towers", default="auto", metavar="auto|none|DEV_A,DEV_B",
                        help="tower placement (default: auto = one tower per GPU when two GPUs exist)")
    parser.set_defaults(run=_run_summary)


def _run_summary(args) -> None:
    from alexnet_tf.model import build_alexnet
    from alexnet_tf.summary import summarize

    model = build_alexnet(args.num_classes, init=args.init, lrn=args.lrn, tower_devices=_tower_devices(args.towers))
    print(summarize(model))


# === entry point ===
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet-tf",
        description="The 2012 two-tower AlexNet (Krizhevsky, Sutskever & Hinton) on TensorFlow 2 / Keras 3: "
        "prepare data, train, evaluate, export a SavedModel for TF Serving, serve it and query it.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_summary(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; user errors print one line to stderr and return 2."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        args.run(args)
    except UserError as error:
        print(f"alexnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
