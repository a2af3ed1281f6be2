"""`alexnet-tf predict IMAGES...`: the top labels of images, from a trained model in this process (`--model`) or from
a served one (gRPC, or REST with `--rest`)."""

from __future__ import annotations

import sys

from alexnet_tf.cli.common import UserError

NAME = "predict"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".jpe"}


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="the top-5 labels of images: from a run or preset (--model, no server), or from TF Serving",
        description="Classify images (files, directories of images, or - for one image on stdin) and print the top "
        "labels and probabilities of each: with --model in this process, from a run directory (train or "
        "import-weights) or a preset directory; otherwise by asking a running TF Serving or `alexnet-tf serve`.",
    )
    parser.add_argument("images", nargs="+", help="image files, directories, or - (stdin)")
    parser.add_argument("--model", metavar="PATH",
                        help="classify in this process with a run directory or preset directory (no server)")
    parser.add_argument("--crops", choices=("center", "ten"),
                        help="one centre crop, or the paper's 10 crops averaged (default: ten; with a server, "
                        "center means the center_crop signature)")
    parser.add_argument("--top", type=int, default=5, help="labels per image (default: 5; a server returns 5)")
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port (default: localhost:8500)")
    parser.add_argument("--rest", metavar="URL", help="use the REST API at URL (e.g. http://localhost:8501)")
    parser.add_argument("--model-name", default="alexnet")
    parser.add_argument("--signature", choices=("serving_default", "center_crop"),
                        help="the served signature (default: serving_default, or center_crop with --crops center)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.set_defaults(run=run)


def image_inputs(paths: list[str]):
    """(name, bytes) for each file, each image in a directory (sorted), or stdin for '-'."""
    import pathlib

    for item in paths:
        if item == "-":
            yield "-", sys.stdin.buffer.read()
            continue
        path = pathlib.Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise UserError(f"{path}: no image files in this directory")
            for file in files:
                yield str(file), file.read_bytes()
        elif path.is_file():
            yield str(path), path.read_bytes()
        else:
            raise UserError(f"{path}: no such file or directory")


def local_classifier(args):
    """`--model PATH` as a function from images to (labels, classes, scores) rows, or a one-line UserError."""
    from alexnet_tf.classifier import ImageClassifier, PresetError

    try:
        classifier = ImageClassifier.from_preset(args.model)
    except PresetError as error:
        raise UserError(str(error)) from None

    def classify(names: list[str], images: list[bytes]):
        from alexnet_tf.classifier import ImageError

        try:
            probabilities = classifier.predict(images, crops=args.crops or "ten", batch_size=len(images))
        except ImageError as error:
            raise UserError(f"{names[error.index]}: {error.reason}") from None
        return [([classifier.labels[c] for c in classes], classes.tolist(), row[classes].tolist())
                for row, classes in zip(probabilities, classifier.top_classes(probabilities, args.top))]

    return classify


def served_classifier(args):
    """A running server as a function from images to (labels, classes, scores) rows."""
    from serving.client import PredictClient, RestClient, ServingError

    signature = args.signature or ("center_crop" if args.crops == "center" else "serving_default")
    if args.rest:
        client = RestClient(args.rest, args.model_name, signature=signature, timeout=args.timeout)
    else:
        client = PredictClient(args.server, args.model_name, signature=signature, timeout=args.timeout)

    def classify(names: list[str], images: list[bytes]):
        try:
            predictions = client.predict(images)
        except ServingError as error:
            raise UserError(str(error)) from None
        return [(p.labels[:args.top], p.classes[:args.top], p.scores[:args.top]) for p in predictions]

    return classify


def run(args) -> None:
    import json

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    classify = local_classifier(args) if args.model else served_classifier(args)
    batch: list[tuple[str, bytes]] = []

    def flush():
        for (name, _), (labels, classes, scores) in zip(batch, classify([n for n, _ in batch], [d for _, d in batch])):
            if args.json:
                print(json.dumps({"image": name, "labels": labels, "classes": classes,
                                  "scores": [round(s, 6) for s in scores]}))
            else:
                print(name)
                for label, score in zip(labels, scores):
                    print(f"  {score:7.2%}  {label}")
        batch.clear()

    for item in image_inputs(args.images):
        batch.append(item)
        if len(batch) >= args.batch_size:
            flush()
    if batch:
        flush()
