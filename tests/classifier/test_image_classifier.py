"""ImageClassifier: the same answers as the exported signatures (TF1 Session path) on paths, bytes and arrays, for
both variants; labels, features, presets, and the errors a user meets."""

import io
import json
import re
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.classifier import ImageClassifier, ImageError, PresetError
from tests.classifier.conftest import LABELS, make_run, session_outputs

# Both sides run the same float32 ops on the same pixels (decode, antialiased resize, mean, crop, network, softmax);
# only the summation order inside a matmul or convolution may differ between a Session and a tf.function. A
# reordered float32 sum of n terms moves by at most ~n * 2^-24 of the sum of |terms|: the longest sums (fc6, 9216
# terms) keep the logits of these O(1)-scaled nets within ~1e-3 relative, and a softmax moves by at most half the
# largest logit change. 1e-4 on probabilities in [0, 1] bounds that with room; a wrong crop, mean or variant moves
# them by 1e-2 and more.
ATOL = 1e-4


def jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(module_tmp_path):
    """Three images of other sizes than 256x256, as files, bytes and the arrays they decode to."""
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((300, 420, 3), (256, 256, 3), (500, 333, 3))]
    encoded = [jpeg(arrays[0]), png(arrays[1]), jpeg(arrays[2], 80)]
    paths = []
    for i, data in enumerate(encoded):
        path = module_tmp_path / f"photo_{i}.{'png' if i == 1 else 'jpg'}"
        path.write_bytes(data)
        paths.append(path)
    # TensorFlow's own decoder: PIL's JPEG IDCT rounds differently, so its arrays are other (equally valid) pixels
    decoded = [tf.io.decode_image(data, channels=3).numpy() for data in encoded]
    return paths, encoded, decoded


@pytest.mark.parametrize("variant", ["paper", "caffe"])
@pytest.mark.parametrize("crops, signature", [("center", "center_crop"), ("ten", "serving_default")])
def test_predict_equals_the_exported_signature(runs, variant, photos, crops, signature):
    run_dir, model, _, version_dir = runs[variant]
    paths, encoded, decoded = photos
    expected = session_outputs(version_dir, signature, encoded)
    classifier = ImageClassifier.from_preset(run_dir)
    assert classifier.image_size == model.image_size
    for images in (paths, [str(p) for p in paths], encoded, decoded):
        np.testing.assert_allclose(classifier.predict(images, crops=crops, batch_size=2), expected, atol=ATOL)
    assert classifier.predict(encoded, crops=crops).dtype == np.float32


@pytest.mark.parametrize("variant", ["paper", "caffe"])
def test_predict_is_the_network_on_the_mean_subtracted_centre_crop(runs, variant):
    """Independent of the export: NumPy crops and mean subtraction around the trained Keras model (224 crops
    at 16 for the paper's variant, 227 at 14 for Caffe's)."""
    run_dir, model, mean, _ = runs[variant]
    pixels = np.random.default_rng(4).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    size = model.image_size
    top = (256 - size) // 2
    logits = model.predict((pixels.astype(np.float32) - mean)[:, top:top + size, top:top + size], verbose=0)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    expected = softmax / softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(ImageClassifier.from_preset(run_dir).predict(pixels), expected, atol=ATOL)


def test_decode_predictions_best_first_with_the_runs_labels(classifier):
    probabilities = np.array([[0.05, 0.5, 0.1, 0.0, 0.0, 0.2, 0.0, 0.15, 0.0, 0.0],
                              [0.1] * 10], np.float32)
    decoded = classifier.decode_predictions(probabilities, top=3)
    assert decoded[0] == [("class_1", 0.5), ("class_5", pytest.approx(0.2)), ("class_7", pytest.approx(0.15))]
    assert [label for label, _ in decoded[1]] == ["class_0", "class_1", "class_2"]  # ties: lower index first
    assert len(classifier.decode_predictions(probabilities, top=50)[0]) == 10
    with pytest.raises(ValueError, match=r"expected probabilities \[n, 10\]"):
        classifier.decode_predictions(np.zeros((2, 7)))


@pytest.mark.parametrize("layer, keras_layer, width", [("fc7", "fc8_input", 4096), ("fc6", "fc7_input", 4096),
                                                       ("pool5", "fc6_input", 9216)])
def test_features_are_the_layers_own_output(exported_run, classifier, layer, keras_layer, width):
    _, model, mean, _ = exported_run
    pixels = np.random.default_rng(6).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    size, top = model.image_size, (256 - model.image_size) // 2
    extractor = keras.Model(model.inputs[0], model.get_layer(keras_layer).output)
    expected = extractor((pixels.astype(np.float32) - mean)[:, top:top + size, top:top + size], training=False)
    features = classifier.features(list(pixels), layer=layer, batch_size=2)
    assert features.shape == (3, width) and features.dtype == np.float32
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(features, expected, atol=1e-4 * scale)


def test_a_preset_round_trip_is_bit_identical(exported_run, classifier, photos, tmp_path):
    model = exported_run[1]
    directory = classifier.save_to_preset(tmp_path / "preset")
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    assert names == ["assets/labels.txt", "assets/mean_image.npy", "config.json", "metadata.json",
                     "model.weights.h5", "preprocessor.json"]
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.count_params() and metadata["variant"] == model.variant
    assert metadata["num_classes"] == 10 and metadata["keras_version"] == keras.version()
    assert json.loads((directory / "preprocessor.json").read_text())["crop_size"] == model.image_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    again = ImageClassifier.from_preset(directory)
    _, encoded, _ = photos
    for crops in ("center", "ten"):
        np.testing.assert_array_equal(again.predict(encoded, crops=crops), classifier.predict(encoded, crops=crops))
    assert again.labels == LABELS
    with pytest.raises(PresetError, match="exists and is not empty"):
        classifier.save_to_preset(directory)
    classifier.save_to_preset(directory, overwrite=True)


def test_a_mixed_precision_run_classifies_in_float32(tmp_path, photos):
    model, _ = make_run(tmp_path / "bf16", "paper", dtype="mixed_bfloat16")
    classifier = ImageClassifier.from_preset(tmp_path / "bf16")
    assert classifier.model.get_layer("conv1_a").dtype_policy.name == "float32"
    probabilities = classifier.predict(photos[1])
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    preset = classifier.save_to_preset(tmp_path / "preset")  # keeps the precision the run trained with
    assert json.loads((preset / "metadata.json").read_text())["dtype"] == "mixed_bfloat16"
    np.testing.assert_array_equal(ImageClassifier.from_preset(preset).predict(photos[1]), probabilities)


def test_bad_paths_name_the_path_and_what_was_expected(tmp_path, exported_run):
    with pytest.raises(PresetError, match=f"{tmp_path / 'nowhere'}: no such directory; expected a run directory"):
        ImageClassifier.from_preset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PresetError, match="holds no model: expected a run directory"):
        ImageClassifier.from_preset(tmp_path / "empty")
    with pytest.raises(PresetError, match="is a file; expected"):
        ImageClassifier.from_preset(exported_run[0] / "best.keras")
    half = tmp_path / "half"
    half.mkdir()
    (half / "best.keras").write_bytes((exported_run[0] / "best.keras").read_bytes())
    with pytest.raises(PresetError, match="is not a finished training run: missing stats.npz, labels.txt"):
        ImageClassifier.from_preset(half)
    (half / "stats.npz").write_bytes((exported_run[0] / "stats.npz").read_bytes())
    (half / "labels.txt").write_text("a\nb\n")
    with pytest.raises(PresetError, match="holds 2 labels for a model of 10 classes"):
        ImageClassifier.from_preset(half)


def test_a_keras_file_with_code_in_it_is_refused_never_run(tmp_path, exported_run):
    """A .keras whose Lambda layer would write a file if it ran: refused, and the file never appears."""
    marker = tmp_path / "ran"
    name = str(marker)
    inputs = keras.Input((224, 224, 3))
    outputs = keras.layers.Lambda(lambda x: x + (open(name, "w").close() or 0))(inputs)
    marker.unlink()
    run = tmp_path / "run"
    run.mkdir()
    keras.Model(inputs, outputs).save(run / "best.keras")
    for name in ("stats.npz", "labels.txt"):
        (run / name).write_bytes((exported_run[0] / name).read_bytes())
    with pytest.raises(PresetError, match="is not an alexnet-tf model: its config names 'Functional'"):
        ImageClassifier.from_preset(run)
    assert not marker.exists()
    with zipfile.ZipFile(run / "best.keras", "w") as archive:  # an AlexNet name on a Lambda model: safe mode
        archive.writestr("config.json", json.dumps({"registered_name": "alexnet_tf>AlexNet", "class_name": "Lambda",
                                                    "module": "keras.layers", "config": {"function": "x"}}))
        archive.writestr("metadata.json", "{}")
    with pytest.raises(PresetError, match="Keras cannot load it safely"):
        ImageClassifier.from_preset(run)
    assert not marker.exists()


def test_bad_images_name_the_item_and_the_reason(classifier, photos, tmp_path):
    paths, encoded, decoded = photos
    cases = [
        ([encoded[0], b"not an image at all"], "image 1: not an image: expected JPEG, PNG, GIF or BMP bytes"),
        ([encoded[0][:200]], "image 0: "),
        ([paths[0], tmp_path / "missing.jpg"], re.escape(f"image 1 ({tmp_path / 'missing.jpg'}): cannot read it")),
        ([decoded[0].astype(np.float32)], r"image 0: expected a file path, image bytes or a uint8 array \[H, W, 3\]"),
        ([decoded[0][..., :1]], r"uint8 \[300, 420, 1\]"),
    ]
    for images, message in cases:
        with pytest.raises(ImageError, match=message):
            classifier.predict(images)
    with pytest.raises(TypeError, match="images must be a list"):
        classifier.predict(paths[0])
    with pytest.raises(ValueError, match="crops must be one of"):
        classifier.predict(encoded, crops="five")


def test_large_lists_are_read_one_batch_at_a_time(classifier, photos):
    """A generator of images is consumed a batch ahead at most: memory is bounded by batch_size, not the list."""
    _, encoded, _ = photos
    pulled = []

    def images():
        for i in range(7):
            pulled.append(i)
            yield encoded[i % 3]

    batches = classifier._batches(images(), batch_size=3)
    assert next(batches).shape == (3, 256, 256, 3) and pulled == [0, 1, 2]
    probabilities = classifier.predict(images(), batch_size=3)
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities[3:6], probabilities[:3], atol=ATOL)
