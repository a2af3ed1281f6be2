"""`alexnet-tf summary`: the network's layer table."""

from __future__ import annotations

NAME = "summary"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="print the network's layer table: output shapes, parameters, towers",
        description="Print every layer of the two-tower network with its output shape, parameter count and tower, "
        "then the parameters per paper layer (conv1..fc8) and the total (60,965,224 for 1000 classes).",
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="width of fc8 (default: 1000)")
    parser.add_argument("--init", default="paper", choices=("paper", "he", "caffe"), help="weight init scheme")
    parser.add_argument("--lrn", default="paper", choices=("paper", "cuda-convnet", "caffe"), help="LRN constants")
    parser.add_argument("--variant", default="paper", choices=("paper", "caffe"),
                        help="paper: 224 input, LRN per tower; caffe: bvlc_alexnet's 227 input, LRN across towers")
    parser.add_argument("--towers", default="auto", metavar="auto|none|DEV_A,DEV_B",
                        help="tower placement (default: auto = one tower per GPU when two GPUs exist)")
    parser.set_defaults(run=run)


def tower_devices(value: str):
    """--towers: 'auto' (one tower per GPU when there are two), 'none', or 'DEV_A,DEV_B'."""
    from alexnet_tf.network import placement

    if value == "none":
        return None
    if value == "auto":
        return placement.tower_devices()
    return placement.validate(value.split(","))


def run(args) -> None:
    from alexnet_tf.network.model import build_alexnet
    from alexnet_tf.network.summary import summarize

    model = build_alexnet(args.num_classes, init=args.init, lrn=args.lrn, variant=args.variant,
                          tower_devices=tower_devices(args.towers))
    print(summarize(model))
