"""`alexnet-tf prepare SOURCE OUT_DIR`: the paper's offline step."""

from __future__ import annotations

import os

from alexnet_tf.cli.common import UserError, add_data_source_options, source_kwargs

NAME = "prepare"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
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
    add_data_source_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from alexnet_tf.data.prepare import PrepareOptions, prepare
    from alexnet_tf.data.sources import DatasetError

    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be in 1..100, got {args.quality}")
    shards = {"train": args.train_shards, "validation": args.validation_shards}
    options = PrepareOptions(quality=args.quality, min_side=args.min_side, max_pixels=args.max_pixels,
                             workers=max(1, args.workers))
    try:
        prepare(args.source, args.out_dir, splits=tuple(args.splits), shards=shards, options=options,
                **source_kwargs(args))
    except DatasetError as error:
        raise UserError(str(error)) from None
