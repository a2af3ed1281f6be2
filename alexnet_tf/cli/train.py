"""`alexnet-tf train`: flags -> a resolved Config -> `training.loop.train`."""

from __future__ import annotations

import sys

from alexnet_tf.cli.common import UserError, add_data_source_options

NAME = "train"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="train AlexNet (no arguments: the demo preset on the built-in demo data, under 10 minutes on a CPU)",
        description="Train the two-tower AlexNet with the paper's update rule and schedule. Settings come from a "
        "preset, then a --config file (JSON or YAML, any subset of the model/data/train sections), then the flags "
        "below and --set SECTION.KEY=VALUE. Running the same command again resumes from the last backup. SIGTERM or "
        "Ctrl-C: the current step ends, a backup is written at it, and the exit status is 143 (130 for Ctrl-C); "
        "a second Ctrl-C stops at once.",
    )
    parser.add_argument("--preset", choices=("paper", "demo", "finetune", "smoke"),
                        help="starting point (default: finetune with --init-from, demo for --data demo, paper "
                        "otherwise)")
    parser.add_argument("--config", help="JSON or YAML file with model/data/train settings")
    parser.add_argument("--data", help="demo | demo-transfer | folder:DIR | records:DIR | tfds:NAME[:SPLIT] "
                        "(default: the preset's: demo, or demo-transfer for finetune)")
    parser.add_argument("--init-from", metavar="SOURCE",
                        help="start from trained weights: a run directory (its best.keras, else final.keras) or a "
                        ".keras file; weights only (fresh optimizer and schedule), fc8 re-made when the class count "
                        "differs, the source's LRN and input scale adopted")
    parser.add_argument("--freeze", metavar="NAMES",
                        help="with --init-from: comma-separated paper layers to keep fixed (conv1..conv5, fc6, fc7; "
                        "'conv' = conv1-conv5), both towers")
    parser.add_argument("--run-dir", help="where the run goes (default: runs/<preset>)")
    parser.add_argument("--fresh", action="store_true", help="delete the run directory first instead of resuming")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--schedule", choices=("plateau", "step", "constant"))
    parser.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
                        help="auto: float32 or, where the hardware computes it natively (avx512_bf16/AMX CPUs, "
                        "tensor-core GPUs), mixed precision, whichever a timed trial finds fastest (default: demo "
                        "auto, paper float32)")
    parser.add_argument("--jit", choices=("auto", "on", "off"),
                        help="XLA-compile the training step; auto (default) times both once per machine and "
                        "keeps the faster (the choice is cached under $ALEXNET_TF_CACHE)")
    parser.add_argument("--init", choices=("paper", "he", "caffe"))
    parser.add_argument("--parallel", choices=("none", "towers", "data"),
                        help="towers: one tower per GPU (the paper's model parallelism); data: MirroredStrategy")
    parser.add_argument("--strategy", choices=("default", "multi_worker"),
                        help="multi_worker: MultiWorkerMirroredStrategy, cluster from TF_CONFIG")
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--seed", type=int, help="data order, augmentation and initialisation")
    parser.add_argument("--no-xla", action="store_true", help="the same as --jit off")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="any other setting, e.g. --set train.warmup_epochs=1 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_data_source_options(parser)
    parser.set_defaults(run=run)


def flag_values(args) -> dict:
    """The flags as dotted config keys (unset flags left out); --set items last, so they win."""
    flags = {
        "data.dataset": args.data, "data.manual_dir": args.manual_dir, "data.data_dir": args.data_dir,
        "data.label_offset": args.label_offset, "data.num_classes": args.num_classes,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size,
        "train.learning_rate": args.learning_rate, "train.schedule": args.schedule,
        "train.precision": args.precision, "model.init": args.init, "train.parallel": args.parallel,
        "train.strategy": args.strategy, "train.steps_per_epoch": args.steps_per_epoch,
        "train.jit_compile": "off" if args.no_xla else args.jit,
        "train.init_from": args.init_from, "train.freeze": args.freeze,
    }
    if args.seed is not None:
        flags.update({"data.seed": args.seed, "train.seed": args.seed})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        flags[key.strip()] = value.strip()
    return {k: v for k, v in flags.items() if v is not None}


def resolve_config(args):
    """The resolved Config of a `train` command line (UserError on a bad setting or an unusable source)."""
    from alexnet_tf.training import config as config_module

    try:
        return config_module.resolve(flag_values(args), preset_name=args.preset, config_file=args.config,
                                     run_dir=args.run_dir, fresh=args.fresh)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None


def run(args) -> None:
    config = resolve_config(args)
    if args.print_config:
        print(config.to_json(), end="")
        return
    from alexnet_tf.data.sources import DatasetError
    from alexnet_tf.training.config import default_run_dir
    from alexnet_tf.training.finetune import SourceError
    from alexnet_tf.training.loop import TrainingError, format_summary, train
    from alexnet_tf.training.preemption import Preempted

    stopped = None
    try:
        result = train(config, args.run_dir or default_run_dir(config.preset), fresh=args.fresh)
    except (DatasetError, TrainingError, SourceError) as error:
        raise UserError(str(error)) from None
    except Preempted as stop:  # a backup at the exact step: exit as the signal would have, 143 or 130
        stopped = (str(stop), stop.exit_status)
    if stopped:
        print(f"alexnet-tf train: {stopped[0]}", file=sys.stderr, flush=True)
        raise SystemExit(stopped[1])
    print(format_summary(result))
