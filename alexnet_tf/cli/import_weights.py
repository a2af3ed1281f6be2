"""`alexnet-tf import-weights SOURCE RUN_DIR`: Caffe's bvlc_alexnet -> a run directory."""

from __future__ import annotations

from alexnet_tf.cli.common import UserError

NAME = "import-weights"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="make a run directory from Caffe's published ImageNet AlexNet (bvlc_alexnet), to evaluate, export, "
        "serve or fine-tune",
        description="Read bvlc_alexnet's weights (a .caffemodel in either of Caffe's layouts, or caffe-tensorflow's "
        "bvlc_alexnet.npy), check every layer's shape, convert them to this package's 'caffe' variant (227 crops, "
        "Caffe's LRN across towers; conv1 turned from BGR to RGB, fc6 to Keras' flatten order) and write RUN_DIR "
        "with config.json, final.keras, best.keras, labels.txt and stats.npz (the mean image). RUN_DIR appears "
        "complete or not at all.",
    )
    parser.add_argument("source", help="bvlc_alexnet.caffemodel or bvlc_alexnet.npy")
    parser.add_argument("run_dir", help="the run directory to create (must not exist, or be empty)")
    parser.add_argument("--mean", metavar="FILE",
                        help="Caffe's imagenet_mean.binaryproto (or a .npy, 3 x 256 x 256 BGR); default: the "
                        "per-channel BGR mean (104, 117, 123) of Caffe's examples")
    parser.add_argument("--labels", metavar="FILE",
                        help="one label per class, e.g. Caffe's synset_words.txt; default: the 1000 ILSVRC-2012 "
                        "synsets in Caffe's order with their names")
    parser.set_defaults(run=run)


def run(args) -> None:
    from alexnet_tf.weights.importer import WeightImportError, import_weights

    try:
        run_dir = import_weights(args.source, args.run_dir, mean=args.mean, labels=args.labels)
    except WeightImportError as error:
        raise UserError(str(error)) from None
    print(f"wrote {run_dir}: config.json, final.keras, best.keras, labels.txt, stats.npz (caffe variant, 227 crops)")
    print("next:")
    print(f"  alexnet-tf export {run_dir} --base-dir export --name alexnet")
    print("  alexnet-tf serve --model-base-path export/alexnet   # then: alexnet-tf predict IMAGE.jpg")
    print(f"  alexnet-tf evaluate {run_dir} --manual-dir ~/imagenet   # ILSVRC-2012 validation")
    print(f"  alexnet-tf train --init-from {run_dir} --data folder:~/photos   # fine-tune on your images")
