"""What several commands share: the user-error type, TensorFlow's quiet start, data-source flags, opening a run."""

from __future__ import annotations

import os


class UserError(Exception):
    """A problem the user can fix (bad path, bad value): printed as one line, no traceback, exit status 2."""


def quiet_tensorflow(verbose: bool) -> None:
    """TensorFlow's C++ start-up chatter (CUDA probes on CPU hosts, oneDNN notices) hides what matters: silenced,
    at the file-descriptor level for the lines TF_CPP_MIN_LOG_LEVEL cannot reach, unless --verbose asks for it
    or the user set TF_CPP_MIN_LOG_LEVEL below 3. Errors, warnings and tracebacks still show."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from alexnet_tf.process import quiet_stderr

    quiet_stderr.install()


def add_data_source_options(parser) -> None:
    parser.add_argument("--manual-dir", help="tfds: folder with manually downloaded files (imagenet2012: the tars)")
    parser.add_argument("--data-dir", help="tfds: where tensorflow-datasets keeps prepared data")
    parser.add_argument("--label-offset", type=int, help="records: subtract from stored labels (1 for "
                        "tensorflow/models' 1-based ImageNet shards; default: the manifest's, else 0)")
    parser.add_argument("--num-classes", type=int, help="records without a manifest: the number of classes")


def source_kwargs(args) -> dict:
    """The data-source flags as keyword arguments of `open_dataset` / `prepare`."""
    return {"manual_dir": args.manual_dir, "data_dir": args.data_dir, "label_offset": args.label_offset,
            "num_classes": args.num_classes}


def load_run(run_dir: str, which: str = "best"):
    """(config, model, stats) of a training run directory, with clear errors for what is missing."""
    import pathlib

    from alexnet_tf.data.stats import Stats
    from alexnet_tf.network.model import load_model
    from alexnet_tf.training import config as config_module

    run = pathlib.Path(run_dir)
    missing = [name for name in ("config.json", f"{which}.keras", "stats.npz") if not (run / name).is_file()]
    if missing:
        raise UserError(f"{run} is not a finished training run: missing {', '.join(missing)}")
    config = config_module.Config.from_dict(config_module.load(run / "config.json"))
    return config, load_model(run / f"{which}.keras"), Stats.load(run / "stats.npz")


def prepared_uri(args, config) -> str:
    """The `records:` URI of a run's data set (or of --data), prepared on first use."""
    from alexnet_tf.data.sources import DatasetError
    from alexnet_tf.training.loop import prepared_uri as prepare_once

    if args.data:
        config = config.override({"data.dataset": args.data})
    try:
        return prepare_once(config)
    except DatasetError as error:
        raise UserError(str(error)) from None


def load_classifier(run_dir: str, which: str = "best"):
    """(ImageClassifier, Config) of a training run directory, with a one-line error for what is missing."""
    import pathlib

    from alexnet_tf.classifier import ImageClassifier, PresetError
    from alexnet_tf.training import config as config_module

    run = pathlib.Path(run_dir)
    if not (run / "config.json").is_file():
        raise UserError(f"{run} is not a finished training run: missing config.json")
    try:
        classifier = ImageClassifier.from_preset(run, model=which)
    except PresetError as error:
        raise UserError(str(error)) from None
    return classifier, config_module.Config.from_dict(config_module.load(run / "config.json"))


def open_split(args, config, split: str):
    """One split of a run's data set (or of --data)."""
    from alexnet_tf.data.sources import DatasetError, open_dataset

    try:
        return open_dataset(prepared_uri(args, config), split, **source_kwargs(args))
    except DatasetError as error:
        raise UserError(str(error)) from None


def run_splits(args, config):
    """(train, validation) sources of a run's data set (either may be None when the split does not exist)."""
    from alexnet_tf.data.sources import DatasetError, open_dataset

    uri = prepared_uri(args, config)
    sources = []
    for split in (config.data.train_split, config.data.validation_split):
        try:
            sources.append(open_dataset(uri, split, **source_kwargs(args)) if split else None)
        except DatasetError as error:
            print(f"note: {error}")
            sources.append(None)
    return sources
