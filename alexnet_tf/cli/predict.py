"""`alexnet-tf predict IMAGES...`: top-5 labels of images from a served model (gRPC or REST)."""

from __future__ import annotations

import sys

from alexnet_tf.cli.common import UserError

NAME = "predict"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".jpe"}


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="ask a running TF Serving (or `alexnet-tf serve`) for the top-5 labels of images",
        description="Send images (files, directories of images, or - for one image on stdin) to a served model and "
        "print the top-5 labels and probabilities of each.",
    )
    parser.add_argument("images", nargs="+", help="image files, directories, or - (stdin)")
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port (default: localhost:8500)")
    parser.add_argument("--rest", metavar="URL", help="use the REST API at URL (e.g. http://localhost:8501)")
    parser.add_argument("--model-name", default="alexnet")
    parser.add_argument("--signature", default="serving_default", choices=("serving_default", "center_crop"))
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


def run(args) -> None:
    import json

    from serving.client import PredictClient, RestClient, ServingError

    if args.rest:
        client = RestClient(args.rest, args.model_name, signature=args.signature, timeout=args.timeout)
    else:
        client = PredictClient(args.server, args.model_name, signature=args.signature, timeout=args.timeout)
    batch: list[tuple[str, bytes]] = []

    def flush():
        try:
            predictions = client.predict([data for _, data in batch])
        except ServingError as error:
            raise UserError(str(error)) from None
        for (name, _), prediction in zip(batch, predictions):
            if args.json:
                print(json.dumps({"image": name, "labels": prediction.labels, "classes": prediction.classes,
                                  "scores": [round(s, 6) for s in prediction.scores]}))
            else:
                print(name)
                for label, score in zip(prediction.labels, prediction.scores):
                    print(f"  {score:7.2%}  {label}")
        batch.clear()

    for item in image_inputs(args.images):
        batch.append(item)
        if len(batch) >= args.batch_size:
            flush()
    if batch:
        flush()
