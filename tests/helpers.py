"""One checker for every custom Keras layer: config round-trips, shapes, dtypes, values and a fit() step."""

from __future__ import annotations

import json

import keras
import numpy as np


def check_layer(
    layer_cls,
    init_kwargs: dict,
    input_data: np.ndarray,
    expected_output: np.ndarray | None = None,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> None:
    """Check a layer the way keras-hub's layer tests do, with our own public-API-only helper.

    - `get_config`/`from_config` and a JSON round-trip rebuild an equal config;
    - a symbolic call gives the eager call's shape and the policy's compute dtype;
    - the eager call matches `expected_output` (an independent computation) when given;
    - one `fit()` step runs with the layer inside a model;
    - under `mixed_float16` and `mixed_bfloat16` the output dtype is the compute dtype and the values stay close.
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(layer))))
    assert type(revived) is layer_cls and revived.get_config() == config

    symbolic = layer(keras.KerasTensor(input_data.shape, dtype="float32"))
    output = np.asarray(layer(input_data))
    assert tuple(symbolic.shape) == output.shape
    assert symbolic.dtype == "float32"
    if expected_output is not None:
        np.testing.assert_allclose(output, expected_output, atol=atol, rtol=rtol)

    inputs = keras.Input(input_data.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(layer_cls(**init_kwargs)(inputs))))
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(input_data, np.zeros((len(input_data), 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    for policy, tolerance in (("mixed_float16", 1e-2), ("mixed_bfloat16", 5e-2)):
        mixed = layer_cls(**init_kwargs, dtype=policy)
        mixed_output = mixed(input_data)
        assert keras.backend.standardize_dtype(mixed_output.dtype) == mixed.compute_dtype
        np.testing.assert_allclose(np.asarray(mixed_output, "float32"), output, rtol=tolerance, atol=tolerance)
