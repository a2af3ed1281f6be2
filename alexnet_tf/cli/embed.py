"""`alexnet-tf embed RUN_DIR`: fc7 features of a split's images, saved as .npz for retrieval."""

from __future__ import annotations

from alexnet_tf.cli.common import add_data_source_options, load_classifier, open_split

NAME = "embed"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="fc7 features (4096-d) of a split's images, with labels and file names, as .npz",
        description="Run a split's images (centre crops) through the run's model and save a hidden layer's "
        "activations (default: fc7 of both towers, 4096 values) with labels and file names, for retrieval.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="data set URI (default: the run's)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--limit", type=int, help="at most this many images")
    parser.add_argument("--model", default="best", choices=("best", "final"))
    parser.add_argument("--layer", default="fc7", choices=("fc7", "fc6", "pool5"),
                        help="fc7 or fc6 (4096 values) or pool5 (9216; default: fc7)")
    add_data_source_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    import pathlib

    import numpy as np

    from alexnet_tf import figures
    from alexnet_tf.process import atomic

    classifier, config = load_classifier(args.run_dir, args.model)
    source = open_split(args, config, args.split)
    images = figures.load_images(source, limit=args.limit)
    features = classifier.features(images.pixels, layer=args.layer, progress=True)
    out = pathlib.Path(args.out)
    atomic.save_npz(out, features=features, labels=images.labels, filenames=np.array(images.names),
                    classes=np.array(source.classes))
    print(f"wrote {out}: {features.shape[0]} x {features.shape[1]} {args.layer} features with labels and file "
          "names")
