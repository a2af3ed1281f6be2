"""`alexnet-tf figures RUN_DIR`: the paper's Figures 3 and 4 and the training curves for a run."""

from __future__ import annotations

from alexnet_tf.cli.common import add_data_source_options, load_classifier, run_splits

NAME = "figures"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="the paper's pictures for a run: conv1 kernels by tower, top-5 panel, nearest neighbours, curves",
        description="Draw, as PNG files: Figure 3 (the 96 conv1 kernels, tower A above tower B, with a "
        "colour-specificity score per tower), Figure 4 left (eight validation images with their top-5 "
        "predictions), Figure 4 right (five validation images and the six training images nearest in fc7 "
        "feature space) and the training curves with the learning-rate drops.",
    )
    parser.add_argument("run_dir", help="a directory written by `alexnet-tf train`")
    parser.add_argument("--data", help="data set URI (default: the run's)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/figures)")
    parser.add_argument("--model", default="best", choices=("best", "final"))
    parser.add_argument("--neighbour-pool", type=int, default=5000,
                        help="training images searched for nearest neighbours (default: 5000)")
    add_data_source_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    import pathlib

    from alexnet_tf import figures

    classifier, config = load_classifier(args.run_dir, args.model)
    run_dir = pathlib.Path(args.run_dir)
    train, validation = run_splits(args, config)
    out = pathlib.Path(args.out) if args.out else run_dir / "figures"
    written = figures.draw_all(classifier, out, train=train, validation=validation,
                               history_path=run_dir / "history.csv", database_limit=args.neighbour_pool)
    for name, path in written.items():
        print(f"wrote {path} ({name})")
