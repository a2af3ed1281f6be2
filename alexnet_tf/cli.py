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


# === prepare ===
def _add_data_source_options(parser) -> None:
    parser.add_argument("--manual-dir", help="tfds: folder with manually downloaded files (imagenet2012: the tars)")
    parser.add_argument("--data-dir", help="tfds: where tensorflow-datasets keeps prepared data")
    parser.add_argument("--label-offset", type=int, help="records: subtract from stored labels (1 for "
                        "tensorflow/models' 1-based ImageNet shards; default: the manifest's, else 0)")
    parser.add_argument("--num-classes", type=int, help="records without a manifest: the number of classes")


def _source_kwargs(args) -> dict:
    return {"manual_dir": args.manual_dir, "data_dir": args.data_dir, "label_offset": args.label_offset,
            "num_classes": args.num_classes}


def _add_prepare(commands) -> None:
    parser = commands.add_parser(
        "prepare",
        help="the paper's offline step: images -> 256x256 JPEG TFRecord shards + mean image and PCA statistics",
        description="Rescale every image's shorter side to 256, take the central 256x256, re-encode it as JPEG and "
        "write sharded TFRecords (tensorflow/models ImageNet layout) to OUT_DIR, with manifest.json (classes, "
        "counts, skipped files and why) and stats.npz (mean image, RGB covariance eigen-decomposition). Runs in "
        "parallel; atomic and resumable: re-run the same command after an interruption.",
    )
    parser.add_argument("source", help="demo | folder:DIR | records:DIR | tfds:NAME[:SPLIT]")
    parser.add_argument("out_dir", help="where the shards go")
    parser.add_argument("--splits", nargs="+", default=["train", "validation"], help="splits to prepare")
    parser.add_argument("--train-shards", type=int, help="number of training shards (default: 1 per 1250 images)")
    parser.add_argument("--validation-shards", type=int, help="number of validation shards")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the written images (default: 95)")
    parser.add_argument("--min-side", type=int, default=16, help="skip images whose shorter side is smaller")
    parser.add_argument("--max-pixels", type=int, default=50_000_000, help="skip images larger than this")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel shard writers")
    _add_data_source_options(parser)
    parser.set_defaults(run=_run_prepare)


def _run_prepare(args) -> None:
    from alexnet_tf.data.prepare import PrepareOptions, prepare
    from alexnet_tf.data.sources import DatasetError

    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be in 1..100, got {args.quality}")
    shards = {"train": args.train_shards, "validation": args.validation_shards}
    options = PrepareOptions(quality=args.quality, min_side=args.min_side, max_pixels=args.max_pixels,
                             workers=max(1, args.workers))
    try:
        prepare(args.source, args.out_dir, splits=tuple(args.splits), shards=shards, options=options,
                **_source_kwargs(args))
    except DatasetError as error:
        raise UserError(str(error)) from None


# === entry point ===
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet-tf",
        description="The 2012 two-tower AlexNet (Krizhevsky, Sutskever & Hinton) on TensorFlow 2 / Keras 3: "
        "prepare data, train, evaluate, export a SavedModel for TF Serving, serve it and query it.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_summary(commands)
    _add_prepare(commands)
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
