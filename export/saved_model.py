"""A trained AlexNet -> `<base>/<name>/<version>/`, a SavedModel TF Serving runs, with the paper's test-time
preprocessing (resize, mean subtraction, 10 crops, softmax averaging) inside its signatures.

Built on `keras.export.ExportArchive`: measured with TF 2.21 / Keras 3.15, a `tf.Module` saved with
`tf.saved_model.save` loaded in TF2 but failed TF Serving's TF1 Session path ("Could not find variable
conv4_b/bias"), while the same signatures written through ExportArchive pass it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import re
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.classifier.test_time import TestTime, inference_copy
from alexnet_tf.data import ops
from alexnet_tf.network.model import AlexNet
from alexnet_tf.process import atomic, disk
from alexnet_tf.training import execution
from export import precision as precisions

SIGNATURES = ("serving_default", "center_crop", "from_pixels")
TOP_K = 5
WARMUP_FILE = "tf_serving_warmup_requests"


class ExportError(RuntimeError):
    """The export could not be written or did not pass verification; nothing was published."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: pathlib.Path
    version: int
    signatures: dict[str, dict[str, dict[str, str]]]  # name -> {"inputs"|"outputs": {key: "dtype shape"}}
    precision: str = "float32"  # the weights' and the convolutions' dtype: "float32" or "bfloat16"
    agreement: precisions.Agreement | None = None  # bfloat16 vs float32, when bfloat16 was considered
    precision_note: str = ""  # why `--precision auto` chose float32, if it did


def next_version(model_dir: pathlib.Path) -> int:
    """The highest integer-named version directory + 1 (1 for a new model)."""
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


class _Servable:
    """The signature functions: the package's test-time computation (`TestTime`) with top-5 outputs and labels."""

    def __init__(self, model: AlexNet, mean_image: np.ndarray, table: tf.lookup.StaticHashTable, max_pixels: int):
        self.test_time = TestTime(model, mean_image, max_pixels)
        self.table = table
        self.k = min(TOP_K, model.num_classes)

    def _outputs(self, probabilities):
        scores, classes = tf.math.top_k(probabilities, k=self.k)
        return {
            "probabilities": probabilities,
            "classes": tf.cast(classes, tf.int32),
            "scores": scores,
            "labels": self.table.lookup(tf.cast(classes, tf.int64)),
        }

    def serving_default(self, image_bytes):
        return self._outputs(self.test_time.ten_crop_probabilities(self.test_time.decode_batch(image_bytes)))

    def center_crop(self, image_bytes):
        return self._outputs(self.test_time.centre_probabilities(self.test_time.decode_batch(image_bytes)))

    def from_pixels(self, images):
        return self._outputs(self.test_time.ten_crop_probabilities(images))


def _input_signatures() -> dict[str, list[tf.TensorSpec]]:
    image_bytes = [tf.TensorSpec([None], tf.string, name="image_bytes")]
    return {
        "serving_default": image_bytes,
        "center_crop": image_bytes,
        "from_pixels": [tf.TensorSpec([None, ops.PAPER_SIZE, ops.PAPER_SIZE, 3], tf.uint8, name="images")],
    }


def warmup_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Small, valid inputs for every signature: JPEG and PNG bytes of odd sizes, and 256x256 pixels."""
    rng = np.random.default_rng(seed)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)).numpy()
    png = tf.io.encode_png(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).numpy()
    pixels = rng.integers(0, 256, (2, ops.PAPER_SIZE, ops.PAPER_SIZE, 3), dtype=np.uint8)
    encoded = np.array([jpeg, png], dtype=object)
    return {"serving_default": encoded, "center_crop": encoded, "from_pixels": pixels}


def warmup_pixels() -> np.ndarray:
    """The warm-up images as uint8 [4, 256, 256, 3], as the signatures see them after decoding."""
    inputs = warmup_inputs()
    square = ops.chain(ops.decode(ops.DEFAULT_MAX_PIXELS), ops.rescale_to_square(ops.PAPER_SIZE))
    decoded = [square(tf.constant(data)).numpy() for data in inputs["center_crop"]]
    return np.concatenate([np.stack(decoded), inputs["from_pixels"]])


def _choose_precision(model: AlexNet, mean: np.ndarray, precision: str, images, force: bool
                      ) -> tuple[AlexNet, str, precisions.Agreement | None, str]:
    """(inference network, its precision, the bfloat16 agreement if measured, why auto kept float32)."""
    if precision not in precisions.CHOICES:
        raise ValueError(f"precision must be one of {precisions.CHOICES}, got {precision!r}")
    reference = inference_copy(model)
    if precision == "float32":
        return reference, "float32", None, ""
    if precision == "auto" and not execution.native_bfloat16():
        return reference, "float32", None, "this CPU has no native bfloat16 (avx512_bf16 or AMX): float32"
    pixels, labels, source = images if images is not None else (warmup_pixels(), None, "warm-up images")
    candidate = inference_copy(model, "bfloat16")
    agreement = precisions.compare(reference, candidate, mean, pixels, labels, source=source)
    if precision == "auto" and not agreement.acceptable:
        return reference, "float32", agreement, "the bfloat16 copy disagrees with float32 beyond rounding: float32"
    try:
        precisions.check(agreement, force=force)
    except precisions.AgreementError as error:
        raise ExportError(str(error)) from None
    return candidate, "bfloat16", agreement, ""


def _write_warmup(directory: pathlib.Path, model_name: str) -> None:
    """assets.extra/tf_serving_warmup_requests: one PredictionLog per signature, replayed by TF Serving at load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    (directory / "assets.extra").mkdir(exist_ok=True)
    keys = {"serving_default": "image_bytes", "center_crop": "image_bytes", "from_pixels": "images"}
    with tf.io.TFRecordWriter(str(directory / "assets.extra" / WARMUP_FILE)) as writer:
        for signature, values in warmup_inputs().items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            request.inputs[keys[signature]].CopyFrom(tf.make_tensor_proto(values))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


@contextlib.contextmanager
def _quiet_tensorflow_logger():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def verify_with_session(directory: str | pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
    """Load the SavedModel the way TF Serving does (TF1 loader, fresh Graph and Session) and run every
    signature on the warmup inputs by its SignatureDef tensor names; raise ExportError if any fails."""
    results = {}
    inputs = warmup_inputs()
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        try:
            with _quiet_tensorflow_logger():  # the TF1 loader's deprecation note is about TF Serving's path, not ours
                meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(directory))
        except Exception as error:  # the loader raises many types; any of them means TF Serving would fail too
            raise ExportError(f"TF Serving's loader cannot load {directory}: {error}") from error
        for name in SIGNATURES:
            if name not in meta.signature_def:
                raise ExportError(f"{directory} lacks the {name!r} signature")
            signature = meta.signature_def[name]
            (key, tensor_info), = signature.inputs.items()
            fetches = {out: info.name for out, info in signature.outputs.items()}
            try:
                results[name] = session.run(fetches, {tensor_info.name: inputs[name]})
            except Exception as error:
                raise ExportError(f"signature {name!r} fails in a TF1 Session: {error}") from error
            batch = len(inputs[name])
            if results[name]["probabilities"].shape[0] != batch:
                raise ExportError(f"signature {name!r} returned a batch of "
                                  f"{results[name]['probabilities'].shape[0]} for {batch} inputs")
    return results


def describe_signatures(directory: str | pathlib.Path) -> dict[str, dict[str, dict[str, str]]]:
    """{signature: {"inputs": {key: "dtype shape"}, "outputs": {...}}} read from the saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((pathlib.Path(directory) / "saved_model.pb").read_bytes())
    described = {}
    for name, signature in sorted(proto.meta_graphs[0].signature_def.items()):
        if name.startswith("__"):  # __saved_model_init_op: TF's own initializer, not a serving signature
            continue

        def fmt(info):
            dims = [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
            return f"{tf.dtypes.as_dtype(info.dtype).name} {dims}"

        described[name] = {"inputs": {k: fmt(v) for k, v in signature.inputs.items()},
                           "outputs": {k: fmt(v) for k, v in signature.outputs.items()}}
    return described


def export_saved_model(
    model: AlexNet,
    base_dir: str | pathlib.Path,
    *,
    name: str = "alexnet",
    version: int | None = None,
    mean_image: np.ndarray | Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    max_pixels: int = ops.DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    precision: str = "float32",
) -> pathlib.Path:
    """Write `base_dir/name/<version>/` for TF Serving and return its path (see the module docstring).

    mean_image: the training set's 256x256x3 mean image, or an RGB triple (default: the ImageNet mean).
    labels: class names, one per class (default: "0", "1", ...). They ship as an asset and fill the `labels` output.
    precision: "float32" (default), "bfloat16" (weights stored and convolutions run in bfloat16, after checking
    its answers agree with float32's, see `export.precision`) or "auto" (bfloat16 where this host computes it
    natively and the agreement holds, else float32).
    The version is written under a temporary non-numeric name, loaded back through TF Serving's TF1 Session path
    and run on every signature, then renamed into place; an existing version is replaced only with `overwrite`.
    """
    return export(model, base_dir, name=name, version=version, mean_image=mean_image, labels=labels,
                  max_pixels=max_pixels, overwrite=overwrite, precision=precision).path


def export(
    model: AlexNet,
    base_dir: str | pathlib.Path,
    *,
    name: str = "alexnet",
    version: int | None = None,
    mean_image: np.ndarray | Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    max_pixels: int = ops.DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    verbose: bool = False,
    precision: str = "float32",
    agreement_images: tuple[np.ndarray, np.ndarray | None, str] | None = None,
    force_precision: bool = False,
) -> ExportResult:
    """`export_saved_model`, returning the version number, the signatures and the precision's agreement too.

    agreement_images: (uint8 [N, 256, 256, 3] pixels, their labels or None, a description) to compare a bfloat16
    copy with float32 on (default: the 4 warm-up images). force_precision: publish bfloat16 even when it disagrees.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    model_dir = pathlib.Path(base_dir) / name
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = model_dir / str(version)
    if final.exists() and not overwrite:
        raise ExportError(f"{final} exists: pass overwrite=True (--overwrite) to replace it, or another version")
    labels = [str(i) for i in range(model.num_classes)] if labels is None else [str(x) for x in labels]
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    if any("\n" in label for label in labels):
        raise ValueError("labels must not contain newlines")
    mean = np.asarray(ops.IMAGENET_MEAN_RGB if mean_image is None else mean_image, np.float32)
    if mean.shape not in ((3,), (ops.PAPER_SIZE, ops.PAPER_SIZE, 3)):
        raise ValueError(f"mean_image must be (3,) or (256, 256, 3), got {mean.shape}")
    network, chosen, agreement, note = _choose_precision(model, mean, precision, agreement_images, force_precision)

    # A full disk or read-only directory: one line, the staging directory gone, the versions there as they were.
    with disk.guard(final, needed=disk.variable_bytes(model.weights), note="the versions there are as they were"):
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f"_staging_{version}_", dir=model_dir))  # not numeric: ignored
        try:
            (staging / "labels").mkdir()
            labels_file = staging / "labels" / "labels.txt"  # becomes assets/labels.txt
            labels_file.write_text("\n".join(labels) + "\n")
            table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(str(labels_file), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                              tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
                default_value="",
            )
            servable = _Servable(network, mean, table, max_pixels)
            archive = keras.export.ExportArchive()
            # Not archive.track(model): the endpoints already capture the model's tf.Variables, and tracking the Keras
            # wrappers too writes every weight a second time (keras-team/keras#23553): 2x the files, 2x the RAM in TF
            # Serving. The table is not a Keras layer, so it is tracked by hand.
            archive.track(table)
            signatures = _input_signatures()
            for endpoint in SIGNATURES:
                archive.add_endpoint(endpoint, getattr(servable, endpoint), input_signature=signatures[endpoint])
            target = staging / "model"
            archive.write_out(str(target), verbose=verbose)
            _write_warmup(target, name)
            if chosen == "bfloat16":
                (target / "assets.extra" / precisions.AGREEMENT_FILE).write_text(agreement.to_json())
            verify_with_session(target)
            atomic.replace_directory(target, final, f"_retired_{version}")  # not numeric: TF Serving ignores it
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(final, version, describe_signatures(final), chosen, agreement, note)
