"""The training step's forms of conv1/conv2 and their LRN: the same loss and gradients as the layers as built."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet
from alexnet_tf.network import native, space_to_depth
from alexnet_tf.network.training_forms import TrainingForms
from tests.network.test_layers import require_native_ops

EVERY_FORM = TrainingForms(blocked_conv1=True, relu_in_lrn=True)


def loss_and_gradients(model, images, labels, forms):
    model.training_forms = forms
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("variant", ["paper", "caffe"])
def test_every_form_gives_the_layers_loss_and_gradients_in_float32(variant):
    """Both forms at once, on any CPU (the choice by CPU is `for_step`'s, below). The ReLU inside the LRN is the
    same arithmetic; the blocked conv1 sums the same 363 products per output in another order, which errs by at
    most 363 * 2**-24 ~ 2e-5 of the sum of their magnitudes (as any two convolution algorithms differ). The
    difference grows through the layers above, and a ReLU or max pool near a tie can route one position's gradient
    differently: 1e-3 (relative L2 per variable) is well above that and well below what a tap, channel or mask
    out of place gives (0.1 and more)."""
    require_native_ops()
    keras.utils.set_random_seed(0)
    model = build_alexnet(4, dropout=0.0, init="he", variant=variant)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(scale=50.0, size=(2, model.image_size, model.image_size, 3)), tf.float32)
    labels = tf.constant([1, 3])
    plain_loss, plain = loss_and_gradients(model, images, labels, None)
    forms_loss, forms = loss_and_gradients(model, images, labels, EVERY_FORM)
    np.testing.assert_allclose(forms_loss, plain_loss, rtol=1e-5)
    for variable, expected, got in zip(model.trainable_variables, plain, forms):
        assert np.abs(expected).max() > 0, f"{variable.path} has no gradient"
        relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert relative < 1e-3, f"{variable.path}: the forms' gradient differs by {relative:.2e} (L2)"


def test_inference_runs_the_layers_as_built():
    require_native_ops()
    keras.utils.set_random_seed(0)
    model = build_alexnet(4, dropout=0.0)
    images = tf.random.normal((1, 224, 224, 3), stddev=50.0)
    plain = model(images, training=False).numpy()
    model.training_forms = TrainingForms(blocked_conv1=True, relu_in_lrn=True)
    np.testing.assert_array_equal(model(images, training=False).numpy(), plain)
    layers = [layer for layer in model.layers if EVERY_FORM.substitute(layer) is not None]
    assert sorted(layer.name for layer in layers) == [
        "conv1_a", "conv1_a_lrn", "conv1_b", "conv1_b_lrn", "conv2_a", "conv2_a_lrn", "conv2_b", "conv2_b_lrn"]


def test_compile_chooses_the_forms_by_compute_dtype_cpu_and_xla(monkeypatch):
    monkeypatch.setattr(space_to_depth.cpu, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert TrainingForms.for_step("bfloat16", xla=False) == EVERY_FORM
    assert TrainingForms.for_step("float32", xla=False) == TrainingForms(relu_in_lrn=True)
    assert not TrainingForms.for_step("bfloat16", xla=True)
    monkeypatch.setattr(space_to_depth.cpu, "cpu_flags", lambda: {"avx2"})
    assert TrainingForms.for_step("bfloat16", xla=False) == TrainingForms(relu_in_lrn=True)
    model = build_alexnet(4)
    model.compile(jit_compile=False)
    assert model.training_forms == TrainingForms(relu_in_lrn=True)
    model.compile(jit_compile=True)
    assert not model.training_forms


def test_without_the_native_ops_the_relu_stays_a_layer(monkeypatch):
    monkeypatch.setattr(native, "lrn_ops", lambda: None)
    model = build_alexnet(4)
    conv1, lrn1 = model.get_layer("conv1_a"), model.get_layer("conv1_a_lrn")
    assert TrainingForms(relu_in_lrn=True).substitute(conv1) is None
    assert TrainingForms(relu_in_lrn=True).substitute(lrn1) is None
    assert TrainingForms(blocked_conv1=True, relu_in_lrn=True).substitute(conv1).keywords == {
        "blocked": True, "activation": True}
