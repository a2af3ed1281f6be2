"""Where a trained model lives on disk, read and written: a training run directory (`alexnet-tf train` or
`import-weights`: best.keras / final.keras, stats.npz, labels.txt) and a preset directory in keras-hub's file
layout (config.json, model.weights.h5, metadata.json, preprocessor.json, assets/)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import shutil
import tempfile
import zipfile

import keras
import numpy as np

from alexnet_tf.data import ops
from alexnet_tf.data.stats import Stats
from alexnet_tf.network.model import AlexNet
from alexnet_tf.process import atomic

ALEXNET = "alexnet_tf>AlexNet"
"""The registered Keras name every alexnet-tf model's config carries."""
PRESET_FILES = ("config.json", "model.weights.h5", "preprocessor.json")
RUN_FILES = ("stats.npz", "labels.txt")
EXPECTED = ("a run directory (best.keras or final.keras, with stats.npz and labels.txt) or a preset directory "
            "(config.json, model.weights.h5, preprocessor.json)")


class PresetError(ValueError):
    """A path that holds no usable alexnet-tf model: names the path and what was expected."""


@dataclasses.dataclass
class Loaded:
    """A model with what its answers need: the mean image (256x256x3, RGB) and one label per class."""

    model: AlexNet
    mean_image: np.ndarray
    labels: list[str]
    path: pathlib.Path


def _check_alexnet(config: dict, where: pathlib.Path) -> None:
    name = config.get("registered_name") if isinstance(config, dict) else None
    if name != ALEXNET:
        raise PresetError(f"{where} is not an alexnet-tf model: its config names {name or 'no class'!r}, "
                          f"expected {ALEXNET!r}")


def _read_labels(path: pathlib.Path, num_classes: int) -> list[str]:
    labels = path.read_text().splitlines()
    if len(labels) != num_classes:
        raise PresetError(f"{path} holds {len(labels)} labels for a model of {num_classes} classes")
    return labels


def _safe_load(path: pathlib.Path) -> AlexNet:
    """A `.keras` file of an AlexNet, loaded with Keras' safe mode (a Lambda layer or other code is refused)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise PresetError(f"{path} is not a .keras file ({error})") from None
    _check_alexnet(config, path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a file it cannot rebuild
        raise PresetError(f"{path}: Keras cannot load it safely ({type(error).__name__}: {error})") from None


def read_run(run_dir: pathlib.Path, which: str = "best") -> Loaded:
    """A run directory's model (`which` = "best", falling back to final.keras, or "final"), mean image and labels."""
    candidates = ["best.keras", "final.keras"] if which == "best" else [f"{which}.keras"]
    model_file = next((run_dir / name for name in candidates if (run_dir / name).is_file()), None)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if model_file is None or missing:
        lacking = ([" or ".join(candidates)] if model_file is None else []) + missing
        raise PresetError(f"{run_dir} is not a finished training run: missing {', '.join(lacking)}")
    model = _safe_load(model_file)
    return Loaded(model, Stats.load(run_dir / "stats.npz").mean_image, _read_labels(run_dir / "labels.txt",
                  model.num_classes), model_file)


def read_preset(directory: pathlib.Path) -> Loaded:
    """A preset directory written by `save_preset`."""
    config = json.loads((directory / "config.json").read_text())
    _check_alexnet(config, directory / "config.json")
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
        model.load_weights(directory / "model.weights.h5")
    except Exception as error:  # noqa: BLE001
        raise PresetError(f"{directory}: cannot rebuild the model ({type(error).__name__}: {error})") from None
    preprocessor = json.loads((directory / "preprocessor.json").read_text())
    mean_image = np.load(directory / preprocessor["mean_image"]).astype(np.float32)
    if preprocessor.get("crop_size") != model.image_size:
        raise PresetError(f"{directory}: preprocessor.json's crop {preprocessor.get('crop_size')} does not match "
                          f"the model's {model.image_size}")
    return Loaded(model, mean_image, _read_labels(directory / preprocessor["labels"], model.num_classes), directory)


def read(path: str | pathlib.Path, which: str = "best") -> Loaded:
    """A run directory or a preset directory, whichever `path` is (PresetError when it is neither)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise PresetError(f"{path}: no such directory; expected {EXPECTED}")
    if not path.is_dir():
        raise PresetError(f"{path} is a file; expected {EXPECTED}")
    if all((path / name).is_file() for name in PRESET_FILES):
        return read_preset(path)
    if any((path / name).exists() for name in ("best.keras", "final.keras", "stats.npz", "config.json")):
        return read_run(path, which)
    raise PresetError(f"{path} holds no model: expected {EXPECTED}")


def save_preset(loaded: Loaded, directory: str | pathlib.Path, *, config: dict | None = None,
                overwrite: bool = False) -> pathlib.Path:
    """Write `directory` in keras-hub's layout, assembled under a temporary name beside it and renamed into place:
    a crash leaves the old preset or the whole new one. `config`: the Keras config to record (default: the model's;
    ImageClassifier passes the trained model's, so a preset keeps the precision it was trained with)."""
    import alexnet_tf

    directory = pathlib.Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise PresetError(f"{directory} exists and is not empty: pass overwrite=True to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.saving-", dir=directory.parent))
    try:
        config = json.loads(json.dumps(config or keras.saving.serialize_keras_object(model)))  # a copy
        for key in ("compile_config", "build_config"):  # a preset holds the network, not a training state
            config.pop(key, None)
        config["config"]["tower_devices"] = None
        atomic.write_text(staging / "config.json", json.dumps(config, indent=2) + "\n")
        model.save_weights(staging / "model.weights.h5")
        (staging / "assets").mkdir()
        atomic.write_text(staging / "assets" / "labels.txt", "\n".join(loaded.labels) + "\n")
        np.save(staging / "assets" / "mean_image.npy", np.asarray(loaded.mean_image, np.float32))
        preprocessor = {"input": "RGB images of any size (JPEG, PNG, GIF, BMP bytes or uint8 arrays)",
                        "resize_shorter": ops.PAPER_SIZE, "square_crop": ops.PAPER_SIZE,
                        "mean_image": "assets/mean_image.npy", "crop_size": model.image_size,
                        "crops": ["center", "ten"], "labels": "assets/labels.txt"}
        atomic.write_text(staging / "preprocessor.json", json.dumps(preprocessor, indent=2) + "\n")
        metadata = {"keras_version": keras.version(), "alexnet_tf_version": alexnet_tf.__version__,
                    "parameter_count": model.count_params(), "variant": model.variant,
                    "num_classes": model.num_classes, "image_size": model.image_size,
                    "dtype": config["config"].get("dtype"), "source": str(loaded.path),
                    "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
        atomic.write_text(staging / "metadata.json", json.dumps(metadata, indent=2) + "\n")
        atomic.replace_directory(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
