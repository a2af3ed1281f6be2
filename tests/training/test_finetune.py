"""Fine-tuning (`train --init-from`, `--freeze`): weights copied, fc8 re-made, frozen layers bit-identical, the
source's architecture adopted, clear errors that leave no run directory behind, and resume without the source."""

import json
import shutil

import keras
import numpy as np
import pytest

from alexnet_tf import build_alexnet
from alexnet_tf.network.model import paper_layer_of
from alexnet_tf.training import finetune
from tests.conftest import run_cli


def weights_by_layer(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


@pytest.fixture(scope="module")
def source(module_tmp_path):
    """A 7-class source model (the smoke runs' data has 10 classes, so fc8 must be re-made) and its weights."""
    keras.utils.set_random_seed(7)
    model = build_alexnet(7, init="he", input_scale=1 / 64, lrn="caffe")
    path = module_tmp_path / "source.keras"
    model.save(path)
    return path, weights_by_layer(model)


def test_freeze_names():
    assert finetune.freeze_names("conv") == ("conv1", "conv2", "conv3", "conv4", "conv5")
    assert finetune.freeze_names("fc6, conv2") == ("conv2", "fc6")  # network order, spaces allowed
    assert finetune.freeze_names("") == ()
    for bad in ("pool1", "fc8", "conv6"):
        with pytest.raises(finetune.SourceError, match=repr(bad)):
            finetune.freeze_names(f"conv1,{bad}")


def test_copy_and_freeze_then_train_keeps_frozen_layers_bit_identical(source):
    path, expected = source
    read = finetune.read_source(path)
    assert read.num_classes == 7 and len(read.sha256) == 64
    model = build_alexnet(3, init="he", input_scale=1 / 64, lrn="caffe", dropout=0.0)
    messages = []
    finetune.copy_weights(read, model, report=messages.append)
    assert messages == ["fc8: re-initialised for 3 classes (the source has 7)"]
    frozen = finetune.freeze(model, finetune.freeze_names("conv"))
    assert sorted(frozen) == sorted(f"conv{i}_{t}" for i in range(1, 6) for t in "ab")
    model.compile(jit_compile=False)
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 50, (4, 224, 224, 3)).astype("float32"), np.array([0, 1, 2, 1])
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)  # 4 PaperSGD steps, weight decay on

    after = weights_by_layer(model)
    for name, arrays in after.items():
        if name == "fc8":
            assert arrays[0].shape == (4096, 3)
        elif paper_layer_of(name).startswith("conv"):
            for a, b in zip(arrays, expected[name]):
                assert np.array_equal(a, b), f"frozen {name} changed"
        else:  # fc6, fc7: copied, then trained
            assert not np.array_equal(arrays[0], expected[name][0]), f"{name} did not train"


def test_architecture_differences_name_the_layer(source):
    from alexnet_tf.training.config import ModelConfig

    read = finetune.read_source(source[0])
    read.check_architecture(ModelConfig(lrn="caffe", input_scale=1 / 64))  # the same: fine
    with pytest.raises(finetune.SourceError, match="conv1_a_lrn.*lrn='caffe'"):
        read.check_architecture(ModelConfig(lrn="paper", input_scale=1 / 64))
    with pytest.raises(finetune.SourceError, match="conv1_scale"):
        read.check_architecture(ModelConfig(lrn="caffe", input_scale=1.0))


def test_the_sources_architecture_is_adopted_and_explicit_settings_win(source, demo_cache):
    result = run_cli("train", "--init-from", str(source[0]), "--print-config")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout)
    assert config["preset"] == "finetune"  # the default with --init-from
    assert (config["model"]["lrn"], config["model"]["input_scale"]) == ("caffe", 1 / 64)
    assert config["data"]["dataset"] == "demo-transfer"
    result = run_cli("train", "--init-from", str(source[0]), "--set", "model.lrn=paper", "--print-config")
    assert json.loads(result.stdout)["model"]["lrn"] == "paper"


@pytest.mark.slow
def test_fine_tuning_run_end_to_end_and_resume_without_the_source(source, demo_cache, tmp_path):
    path, expected = source
    copy = tmp_path / "copy.keras"
    shutil.copy(path, copy)
    run_dir = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--init-from", str(copy), "--freeze", "conv1,conv2", "--run-dir",
            str(run_dir)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "fc8: re-initialised for 10 classes (the source has 7)" in result.stdout
    assert "frozen: conv1, conv2" in result.stdout
    saved = json.loads((run_dir / "config.json").read_text())["train"]
    assert saved["init_from"] == str(copy) and saved["freeze"] == "conv1,conv2"
    assert saved["init_from_sha256"] == finetune.read_source(path).sha256

    final = weights_by_layer(keras.saving.load_model(run_dir / "final.keras"))
    for name in ("conv1_a", "conv1_b", "conv2_a", "conv2_b"):
        assert all(np.array_equal(a, b) for a, b in zip(final[name], expected[name])), name
    assert not np.array_equal(final["conv3_a"][0], expected["conv3_a"][0])  # not frozen: trained
    assert final["fc8"][0].shape == (4096, 10)

    # Continue the run for another epoch with the source gone: the run's own backup carries it, not the source.
    copy.unlink()
    result = run_cli(*args, "--epochs", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from the backup at epoch 2, batch 0" in result.stdout and "starting from" not in result.stdout
    resumed = weights_by_layer(keras.saving.load_model(run_dir / "final.keras"))
    assert all(np.array_equal(a, b) for a, b in zip(resumed["conv1_a"], expected["conv1_a"]))


@pytest.mark.slow
def test_init_from_a_run_directory(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli("train", "--preset", "smoke", "--init-from", str(run_dir), "--run-dir", str(tmp_path / "ft"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"starting from {run_dir / 'best.keras'}" in result.stdout
    assert "re-initialised" not in result.stdout  # same 10 classes: fc8 is copied too


def _not_an_alexnet(tmp_path):
    path = tmp_path / "dense.keras"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(path)
    return str(path)


def _text_file(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a zip archive")
    return str(path)


def _empty_run(tmp_path):
    (tmp_path / "empty_run").mkdir()
    return str(tmp_path / "empty_run")


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: ["--init-from", str(tmp / "missing")], "no such file or directory"),
    (lambda tmp: ["--init-from", _text_file(tmp)], "not a Keras model file"),
    (lambda tmp: ["--init-from", _not_an_alexnet(tmp)], "not an AlexNet"),
    (lambda tmp: ["--init-from", _empty_run(tmp)], "no best.keras or final.keras"),
    (lambda tmp: ["--freeze", "conv"], "needs train.init_from"),
])
def test_bad_sources_get_one_line_and_leave_no_run_directory(demo_cache, tmp_path, make_args, message):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--run-dir", str(run_dir), *make_args(tmp_path))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_an_unknown_freeze_name_is_refused(source, demo_cache, tmp_path):
    result = run_cli("train", "--preset", "smoke", "--init-from", str(source[0]), "--freeze", "conv9",
                     "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "'conv9' is not a layer" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_an_architecture_clash_is_refused_before_anything_is_written(source, demo_cache, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--init-from", str(source[0]), "--set", "model.lrn=paper",
                     "--run-dir", str(run_dir))
    assert result.returncode == 2 and "layer conv1_a_lrn" in result.stderr, result.stderr[-2000:]
    assert not run_dir.exists()


def test_a_started_run_adopts_the_architecture_it_recorded_without_reading_the_source(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"lrn": "caffe", "input_scale": 0.5},
                                                      "train": {"init_from": "gone.keras"}}))
    assert finetune.adopted_architecture("gone.keras", tmp_path) == {"model.lrn": "caffe", "model.input_scale": 0.5}
    with pytest.raises(finetune.SourceError, match="no such file"):  # another run: the source is read
        finetune.adopted_architecture("gone.keras", tmp_path / "elsewhere")
