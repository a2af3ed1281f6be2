"""The config: presets, overrides from files and flags, and errors that name the bad setting."""

import json

import pytest

from alexnet_tf.training import config


def test_paper_preset_is_the_paper():
    c = config.preset("paper")
    assert (c.train.batch_size, c.train.learning_rate, c.train.momentum, c.train.weight_decay) == (128, 0.01, 0.9, 5e-4)
    assert (c.train.epochs, c.train.schedule, c.train.max_drops) == (90, "plateau", 3)
    assert (c.model.init, c.model.lrn, c.model.dropout) == ("paper", "paper", 0.5)
    assert c.data.pca_std == 0.1 and c.data.flip


def test_json_round_trip_and_overrides(tmp_path):
    c = config.preset("demo")
    assert config.Config.from_dict(json.loads(c.to_json())) == c
    c2 = c.override({"train.epochs": "7", "data.seed": "none", "train.jit_compile": "false"})
    assert (c2.train.epochs, c2.data.seed, c2.train.jit_compile) == (7, None, "off")
    # A config.json written before "auto" existed stored jit_compile as a bool.
    assert c.override({"train": {"jit_compile": True}}).train.jit_compile == "on"
    (tmp_path / "run.yaml").write_text("train:\n  batch_size: 64\nmodel:\n  dropout: 0.3\n")
    c3 = c.override(config.load(tmp_path / "run.yaml"))
    assert (c3.train.batch_size, c3.model.dropout, c3.train.epochs) == (64, 0.3, c.train.epochs)


@pytest.mark.parametrize("values, message", [
    ({"train.batch_size": 0}, "batch_size"),
    ({"train.precision": "float8"}, "precision"),
    ({"train.jit_compile": "sometimes"}, "jit_compile"),
    ({"model.init": "xavier"}, "init"),
    ({"train.bogus": 1}, "unknown train setting"),
    ({"optimizer.lr": 1}, "unknown config section"),
    ({"train.epochs": "ten"}, "expected a number"),
])
def test_bad_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        config.preset("paper").override(values)
