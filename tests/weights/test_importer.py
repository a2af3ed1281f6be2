"""`alexnet-tf import-weights`: Caffe files written here (both caffemodel layouts, caffe-tensorflow .npy, a
binaryproto mean) with random weights of bvlc_alexnet's real names and shapes, imported, and checked against
Caffe's forward pass in NumPy (tests/caffe_reference.py), through Keras and through an exported SavedModel."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.network.model import load_model
from alexnet_tf.weights.importer import CAFFE_SHAPES, read_caffemodel, read_npy
from tests.conftest import run_cli
from tests.weights import caffe_reference as caffe

# Float32 tolerance on the logits, relative to sum|w||x| at fc8 (which bounds any cancellation): every layer's
# dot products of <= 9216 terms round to about sqrt(9216) * 6e-8 = 6e-6 relative, ReLU, max-pooling and LRN do
# not amplify relative errors, and eight layers add up to ~5e-5; 2e-4 leaves 4x room and is still far below
# what a wrong layout, channel order or LRN span changes (checked in the test itself).
RELATIVE_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def weights():
    return caffe.random_weights(seed=0)


@pytest.fixture(scope="module")
def mean_bgr():
    """A mean image with structure (not constant), BGR channel-major like imagenet_mean.binaryproto."""
    rows, cols = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return np.stack([100 + 10 * np.sin(rows / 20), 115 + 0.05 * cols, 125 - 0.04 * rows]).astype(np.float32)


@pytest.fixture(scope="module")
def imported(weights, mean_bgr, module_tmp_path):
    """A V1-layout bvlc_alexnet.caffemodel and mean file, imported by the command a user runs."""
    folder = module_tmp_path
    model_file = caffe.write_caffemodel(folder / "bvlc_alexnet.caffemodel", weights, v1=True)
    mean_file = caffe.write_binaryproto(folder / "imagenet_mean.binaryproto", mean_bgr)
    run_dir = folder / "runs" / "bvlc"
    result = run_cli("import-weights", str(model_file), str(run_dir), "--mean", str(mean_file))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return run_dir, result


def caffe_input(image_rgb: np.ndarray, mean_bgr: np.ndarray) -> np.ndarray:
    """What Caffe's data layer gives bvlc_alexnet for a 256x256 RGB image: the centre 227 crop (offset 14) of the
    BGR image minus the BGR mean, channel-major."""
    bgr = image_rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float64)
    return (bgr - mean_bgr)[:, 14:241, 14:241]


def test_the_imported_run_is_complete(imported, mean_bgr):
    run_dir, result = imported
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "final.keras", "best.keras", "labels.txt",
                                                  "stats.npz", "imported.json"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] | {"dropout": 0.5} == {"variant": "caffe", "lrn": "caffe", "init": "caffe",
                                                 "dropout": 0.5, "input_scale": 1.0}
    labels = (run_dir / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0].startswith("n01440764 tench") and labels[-1].startswith("n15075141")
    with np.load(run_dir / "stats.npz") as stats:  # RGB, height-width-channel
        np.testing.assert_array_equal(stats["mean_image"], mean_bgr[::-1].transpose(1, 2, 0))
    assert "V1 (layers) layout" in result.stdout and "alexnet-tf export" in result.stdout


def test_imported_logits_equal_caffes_forward_pass(imported, weights, mean_bgr):
    run_dir, _ = imported
    model = load_model(run_dir / "final.keras")
    assert model.image_size == 227
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mean_rgb = mean_bgr[::-1].transpose(1, 2, 0)
    crop = (image.astype(np.float32) - mean_rgb)[14:241, 14:241]
    logits = model(crop[None], training=False).numpy()[0]

    reference = caffe.forward(weights, caffe_input(image, mean_bgr))
    tolerance = RELATIVE_TOLERANCE * reference["logit_scale"]
    np.testing.assert_array_less(np.abs(logits - reference["logits"]), tolerance)
    # The comparison can fail: the mistakes importers make move the logits far beyond the tolerance.
    per_tower = caffe.forward(weights, caffe_input(image, mean_bgr), norm=caffe.per_tower_lrn)["logits"]
    rgb_as_bgr = caffe.forward(weights, caffe_input(image[:, :, ::-1], mean_bgr[::-1]))["logits"]
    for wrong in (per_tower, rgb_as_bgr):
        assert np.max(np.abs(wrong - reference["logits"]) / tolerance) > 10


def test_the_current_layout_reads_the_same_weights(weights, tmp_path):
    path = caffe.write_caffemodel(tmp_path / "current.caffemodel", weights, v1=False)
    read = read_caffemodel(path)
    assert read.kind == "caffemodel, current (layer) layout"
    for name in CAFFE_SHAPES:
        for ours, theirs in zip(read.layers[name], weights[name]):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("form", ["list", "dict"])
def test_caffe_tensorflow_npy_reads_the_same_weights(weights, tmp_path, form):
    path = caffe.write_npy(tmp_path / "bvlc_alexnet.npy", weights)
    if form == "dict":  # the other form caffe-tensorflow writes: {"weights": ..., "biases": ...}
        data = np.load(path, allow_pickle=True).item()
        np.save(path, {name: {"weights": w, "biases": b} for name, (w, b) in data.items()}, allow_pickle=True)
    read = read_npy(path)
    for name in CAFFE_SHAPES:
        for ours, theirs in zip(read.layers[name], weights[name]):
            np.testing.assert_array_equal(ours, theirs)


def test_the_export_answers_center_crop_with_caffes_result(imported, weights, mean_bgr, tmp_path):
    import export

    run_dir, _ = imported
    labels = (run_dir / "labels.txt").read_text().splitlines()
    with np.load(run_dir / "stats.npz") as stats:
        mean_image = stats["mean_image"]
    result = export.export(load_model(run_dir / "best.keras"), tmp_path / "export", labels=labels,
                           mean_image=mean_image)  # also loads it through TF Serving's TF1 Session path
    image = np.random.default_rng(9).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(result.path)).signatures["center_crop"](
        image_bytes=tf.constant([tf.io.encode_png(image).numpy()]))

    reference = caffe.forward(weights, caffe_input(image, mean_bgr))
    logits = reference["logits"]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    # softmax moves no probability by more than half the largest logit change
    tolerance = RELATIVE_TOLERANCE * reference["logit_scale"].max()
    np.testing.assert_allclose(served["probabilities"].numpy()[0], probabilities, atol=tolerance / 2 + 1e-7)
    top = int(np.argmax(probabilities))
    assert served["labels"].numpy()[0, 0].decode() == labels[top]


def test_predict_model_on_an_imported_run_gives_caffes_top_labels(imported, weights, mean_bgr, tmp_path):
    """`alexnet-tf predict --model RUN` (no server) answers Caffe's top-5 with the ILSVRC-2012 labels."""
    run_dir, _ = imported
    labels = (run_dir / "labels.txt").read_text().splitlines()
    image = np.random.default_rng(10).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    (tmp_path / "photo.png").write_bytes(tf.io.encode_png(image).numpy())
    result = run_cli("predict", str(tmp_path / "photo.png"), "--model", str(run_dir), "--crops", "center", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    logits = caffe.forward(weights, caffe_input(image, mean_bgr))["logits"]
    assert answer["labels"][0] == labels[int(np.argmax(logits))] and len(answer["labels"]) == 5
    assert answer["labels"][0].startswith("n") and " " in answer["labels"][0]  # "n01440764 tench, ..."


@pytest.mark.slow
def test_fine_tuning_from_an_imported_run_adopts_the_caffe_variant(imported, demo_cache, tmp_path):
    run_dir, _ = imported
    tuned = tmp_path / "tuned"
    result = run_cli("train", "--init-from", str(run_dir), "--data", "demo", "--freeze", "conv",
                     "--precision", "float32", "--jit", "off", "--run-dir", str(tuned),
                     "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.batch_size=4",
                     "--set", "train.validation_steps=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    config = json.loads((tuned / "config.json").read_text())
    assert (config["model"]["variant"], config["model"]["lrn"], config["model"]["input_scale"]) == \
        ("caffe", "caffe", 1.0)
    source, model = load_model(run_dir / "final.keras", compile=False), load_model(tuned / "final.keras",
                                                                                   compile=False)
    assert model.image_size == 227 and model.num_classes == 10
    for name in ("conv1_a", "conv2_b", "conv5_a"):  # frozen: still Caffe's weights
        for ours, theirs in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


# === bad input: one line, exit 2, no run directory ===
def small(**layers):
    """Caffe-layout weights for just the named layers, of the given weight shapes."""
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal(shape).astype(np.float32), np.zeros(shape[0], np.float32))
            for name, shape in layers.items()}


def import_fails(capsys, tmp_path, source, *extra) -> str:
    run_dir = tmp_path / "runs" / "imported"
    status = cli.main(["import-weights", str(source), str(run_dir), *extra])
    error = capsys.readouterr().err.strip()
    assert status == 2 and len(error.splitlines()) == 1, error
    assert not run_dir.exists()
    assert not list(tmp_path.rglob(".*importing*"))  # no staging directory left behind
    return error


def test_a_truncated_caffemodel(capsys, tmp_path):
    data = caffe.caffemodel(small(conv1=(96, 3, 11, 11), conv2=(256, 48, 5, 5)), v1=True)
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) * 2 // 3])
    assert "truncated" in import_fails(capsys, tmp_path, tmp_path / "cut.caffemodel")


def test_a_file_that_is_not_a_protobuf(capsys, tmp_path):
    (tmp_path / "photo.caffemodel").write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    assert "not a Caffe NetParameter file" in import_fails(capsys, tmp_path, tmp_path / "photo.caffemodel")


@pytest.mark.parametrize("layers, says", [
    ({"conv1": (96, 3, 11, 11), "conv2": (256, 48, 3, 3)}, "layer conv2 has weights of shape (256, 48, 3, 3)"),
    ({"conv1": (96, 3, 11, 11), "conv2": (256, 96, 5, 5)}, "one-tower network"),
    ({"conv1": (64, 3, 11, 11)}, "torchvision's one-tower AlexNet"),
    ({"conv1": (96, 3, 11, 11)}, "no layer conv2 with weights"),
])
def test_a_net_that_is_not_bvlc_alexnet(capsys, tmp_path, layers, says):
    path = caffe.write_caffemodel(tmp_path / "other.caffemodel", small(**layers), v1=False)
    assert says in import_fails(capsys, tmp_path, path)


def test_an_npy_that_pickles_code_is_refused(capsys, tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array({"conv1": pathlib.PurePosixPath("/")}, dtype=object), allow_pickle=True)
    assert "refused" in import_fails(capsys, tmp_path, path)


def test_labels_must_match_the_classes(capsys, tmp_path, weights):
    path = caffe.write_caffemodel(tmp_path / "bvlc.caffemodel", weights, v1=False)
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert "2 labels for fc8's 1000 classes" in import_fails(capsys, tmp_path, path, "--labels",
                                                             str(tmp_path / "labels.txt"))


def test_an_existing_run_directory_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "runs" / "imported").mkdir(parents=True)
    (tmp_path / "runs" / "imported" / "notes.txt").write_text("mine")
    status = cli.main(["import-weights", str(tmp_path / "missing.caffemodel"), str(tmp_path / "runs" / "imported")])
    assert status == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "runs" / "imported" / "notes.txt").read_text() == "mine"


def test_the_default_mean_is_caffes_bgr_triple_as_rgb():
    from alexnet_tf.weights.importer import read_mean

    mean = read_mean(None)
    assert mean.shape == (256, 256, 3)
    np.testing.assert_array_equal(mean[0, 0], [123.0, 117.0, 104.0])


def test_a_full_disk_during_the_import_leaves_no_run_directory(weights, capsys, tmp_path, monkeypatch):
    import errno
    import os

    import keras

    source = caffe.write_caffemodel(tmp_path / "bvlc_alexnet.caffemodel", weights, v1=True)
    real_save = keras.Model.save

    def half_then_full(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save", half_then_full)
    error = import_fails(capsys, tmp_path, source)
    run_dir = tmp_path / "runs" / "imported"
    assert error.startswith(f"alexnet-tf import-weights: error: cannot write {run_dir}: no space left on the device (")
    assert "MB needed" in error and error.endswith(f"{run_dir} was not created")
