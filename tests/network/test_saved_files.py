"""`.keras` files written before the package was split into subpackages still load.

The fixtures are the `config.json` of two `.keras` files written by the code as it stood before the move (modules
`alexnet_tf.model`, `alexnet_tf.optimizer`, `alexnet_tf.metrics`): the part of a `.keras` file that names classes
and modules. The weights file beside it names no Python module at all.
"""

import json
import pathlib
import zipfile

import keras
import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.network.metrics import TopKError
from alexnet_tf.network.optimizer import PaperSGD

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_keras_config.json").read_text())


@pytest.mark.parametrize("name, expected", [
    ("demo", {"num_classes": 10, "init": "he", "variant": "paper", "dtype": "mixed_bfloat16", "dropout": 0.0}),
    ("caffe", {"num_classes": 1000, "init": "caffe", "variant": "caffe", "lrn": "caffe", "dropout": 0.5}),
])
def test_an_old_config_rebuilds_the_same_network(name, expected):
    config = fixture(name)
    assert config["module"] == "alexnet_tf.model"  # written before the move
    model = keras.saving.deserialize_keras_object(config)
    assert isinstance(model, alexnet_tf.AlexNet)
    assert {key: model.get_config()[key] for key in expected} == expected
    assert model.image_size == (227 if expected["variant"] == "caffe" else 224)
    compiled = keras.saving.deserialize_keras_object(config["compile_config"])
    optimizer, metrics = compiled["optimizer"], compiled["metrics"]
    assert isinstance(optimizer, PaperSGD)
    assert (float(optimizer.learning_rate), optimizer.momentum, optimizer.coupled_weight_decay) == \
        pytest.approx((0.01, 0.9, 5e-4))
    assert [type(m) for m in metrics] == [TopKError, TopKError] and [m.k for m in metrics] == [1, 5]


def test_an_old_keras_file_loads_with_its_weights_and_optimizer(tmp_path):
    """An old file = the old config.json + a weights file (which holds no module names): load it end to end."""
    config = fixture("demo")
    model = keras.saving.deserialize_keras_object(config)
    model.compile_from_config(config["compile_config"])
    new_file = tmp_path / "new.keras"
    model.save(new_file)
    old_file = tmp_path / "old.keras"
    with zipfile.ZipFile(new_file) as source, zipfile.ZipFile(old_file, "w") as target:
        for item in source.infolist():
            data = json.dumps(config).encode() if item.filename == "config.json" else source.read(item)
            target.writestr(item, data)
    loaded = alexnet_tf.load_model(old_file)
    assert isinstance(loaded.optimizer, PaperSGD) and loaded.get_layer("conv1_a").dtype_policy.name == "mixed_bfloat16"
    images = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
