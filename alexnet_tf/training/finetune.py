"""Starting a run from trained weights (`alexnet-tf train --init-from`): find and read the source, adopt its
architecture, copy its weights layer by layer (fc8 re-made for a new class count), and freeze paper layers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import zipfile

import numpy as np

FREEZABLE = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
"""Paper layers `--freeze` can hold fixed (fc8, the classifier, is what fine-tuning trains)."""
ARCHITECTURE_KEYS = ("lrn", "input_scale", "variant")
"""Model settings that change what the weights compute: a source's values replace the preset's."""


class SourceError(ValueError):
    """The --init-from source cannot be used: says what is wrong with it, in one line."""


def source_file(source: str | pathlib.Path) -> pathlib.Path:
    """The `.keras` file a source names: the file itself, or a run directory's best.keras, else its final.keras."""
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        for name in ("best.keras", "final.keras"):
            if (path / name).is_file():
                return path / name
        raise SourceError(f"--init-from {source}: a directory with no best.keras or final.keras (not a finished run)")
    if not path.exists():
        raise SourceError(f"--init-from {source}: no such file or directory")
    if path.suffix != ".keras":
        raise SourceError(f"--init-from {source}: expected a run directory or a .keras file written by alexnet-tf")
    return path


def source_config(source: str | pathlib.Path) -> dict:
    """The AlexNet constructor arguments stored in a source, read from the archive's config without loading
    weights (cheap: used to adopt the architecture before anything is built)."""
    path = source_file(source)
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise SourceError(f"--init-from {source}: not a Keras model file ({error})") from None
    if saved.get("class_name") != "AlexNet" or not isinstance(saved.get("config"), dict):
        kind = saved.get("class_name", "something else")
        raise SourceError(f"--init-from {source}: a Keras {kind}, not an AlexNet written by alexnet-tf")
    return saved["config"]


def adopted_architecture(source: str | pathlib.Path, run_dir: str | pathlib.Path | None = None) -> dict[str, object]:
    """`{"model.lrn": ..., "model.variant": ...}`: the source's architecture settings, as config overrides.

    When `run_dir` holds a run that started from this source, they come from its config.json: a resumed run never
    reads its source again (it may be gone by then).
    """
    saved = pathlib.Path(run_dir) / "config.json" if run_dir is not None else None
    if saved is not None and saved.is_file():
        run = json.loads(saved.read_text())
        if run.get("train", {}).get("init_from") == str(source):
            return {f"model.{key}": run["model"][key] for key in ARCHITECTURE_KEYS if key in run.get("model", {})}
    config = source_config(source)
    return {f"model.{key}": config[key] for key in ARCHITECTURE_KEYS if key in config}


def freeze_names(value: str) -> tuple[str, ...]:
    """Paper layers named by `--freeze` ("conv" = conv1..conv5), in network order; raise on an unknown name."""
    names = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "conv":
            names.update(layer for layer in FREEZABLE if layer.startswith("conv"))
        elif item in FREEZABLE:
            names.add(item)
        else:
            raise SourceError(f"--freeze {value}: {item!r} is not a layer that can be frozen; "
                              f"choose from conv, {', '.join(FREEZABLE)}")
    return tuple(layer for layer in FREEZABLE if layer in names)


@dataclasses.dataclass
class Source:
    """A source's weights by Keras layer name, its class count, and a SHA-256 over every weight's bytes."""

    path: pathlib.Path
    num_classes: int
    weights: dict[str, list[np.ndarray]]
    sha256: str
    config: dict = dataclasses.field(default_factory=dict)

    def check_architecture(self, model_config) -> None:
        """Raise, naming the layer, where the run's architecture (a `ModelConfig`) computes differently from the
        source's: its weights would mean something else there."""
        layers = {"lrn": "conv1_a_lrn (and every LRN layer)", "input_scale": "conv1_scale",
                  "variant": "images (the input size) and the LRN layers"}
        for key, layer in layers.items():
            theirs, ours = self.config.get(key), getattr(model_config, key)
            if theirs is not None and theirs != ours:
                raise SourceError(f"--init-from {self.path}: layer {layer} differs: the source has {key}={theirs!r}, "
                                  f"this run {ours!r} (drop the setting to adopt the source's)")


def read_source(source: str | pathlib.Path) -> Source:
    """Load a source model's weights (nothing else: no optimizer state, step counter or schedule)."""
    from alexnet_tf.network.model import AlexNet, load_model

    path = source_file(source)
    source_config(path)  # a clear error for a file that is not one of ours, before Keras tries to load it
    try:
        model = load_model(path, compile=False)  # weights only: no optimizer slots to allocate
    except Exception as error:  # noqa: BLE001 - Keras raises anything from a damaged archive; say so in one line
        raise SourceError(f"--init-from {source}: cannot load the model ({type(error).__name__}: {error})") from None
    if not isinstance(model, AlexNet):
        raise SourceError(f"--init-from {source}: not an AlexNet written by alexnet-tf")
    digest = hashlib.sha256()
    weights = {}
    for layer in model.layers:
        arrays = [np.asarray(w) for w in layer.get_weights()]
        if arrays:
            weights[layer.name] = arrays
            for array in arrays:
                digest.update(np.ascontiguousarray(array).tobytes())
    return Source(path, model.num_classes, weights, digest.hexdigest(), model.get_config())


def copy_weights(source: Source, model, report=print) -> None:
    """Copy every weighted layer of `source` into `model` by name; fc8 is left as initialised when the class
    counts differ. Any other difference is an error naming the layer and both shapes."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in source.weights:
            raise SourceError(f"--init-from {source.path}: the source has no layer {layer.name!r}")
        arrays = source.weights[layer.name]
        if layer.name == "fc8" and source.num_classes != model.num_classes:
            report(f"fc8: re-initialised for {model.num_classes} classes (the source has {source.num_classes})")
            continue
        for variable, array in zip(layer.weights, arrays):
            if tuple(variable.shape) != array.shape:
                raise SourceError(
                    f"--init-from {source.path}: layer {layer.name} has {variable.name} of shape {array.shape} in "
                    f"the source but {tuple(variable.shape)} here"
                )
        layer.set_weights(arrays)


def freeze(model, names: tuple[str, ...]) -> list[str]:
    """Make the named paper layers' Keras layers (both towers) non-trainable; return the Keras layer names.
    Call before `compile`: frozen variables then get neither gradients nor weight decay."""
    from alexnet_tf.network.model import paper_layer_of

    frozen = [layer.name for layer in model.layers if layer.weights and paper_layer_of(layer.name) in names]
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False
    return frozen
