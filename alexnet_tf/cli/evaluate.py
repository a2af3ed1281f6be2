"""`alexnet-tf evaluate RUN_DIR`: top-1 / top-5 error, centre crop and 10 crops, as the paper's Table 2."""

from __future__ import annotations

from alexnet_tf.cli.common import UserError, add_data_source_options, load_run, open_split

NAME = "evaluate"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="top-1 / top-5 error of a trained run, centre crop and the paper's 10 crops",
        description="Evaluate a run's model on a split with a single centre crop and with the paper's 10 crops "
        "(4 corners + centre and their mirrors, softmax averaged). Prints a table in the style of the paper's "
        "Table 2 and writes JSON (default: RUN_DIR/evaluation.json).",
    )
    parser.add_argument("run_dir", help="a directory written by `alexnet-tf train`")
    parser.add_argument("--data", help="data set URI (default: the run's)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--model", default="best", choices=("best", "final"), help="which saved model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crops", default="both", choices=("center", "ten", "both"))
    parser.add_argument("--out", help="JSON file to write (default: RUN_DIR/evaluation.json)")
    add_data_source_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    import pathlib

    from alexnet_tf.training import evaluate

    config, model, stats = load_run(args.run_dir, args.model)
    source = open_split(args, config, args.split)
    if source.num_classes != model.num_classes:
        raise UserError(f"class count mismatch: {source.uri} has {source.num_classes} classes, the model "
                        f"{model.num_classes}")
    rows = {}
    for name, ten in (("AlexNet, centre crop", False), ("AlexNet, 10 crops", True)):
        if args.crops == "both" or (args.crops == "ten") == ten:
            print(f"{name}:")
            rows[name] = evaluate.evaluate(model, source, stats, ten_crop=ten, batch_size=args.batch_size)
    print(evaluate.format_table(rows, args.split))
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.run_dir) / "evaluation.json"
    evaluate.write_json(rows, out, run_dir=str(args.run_dir), model=args.model, data=source.uri, split=args.split)
    print(f"wrote {out}")
