"""The two-tower network against the paper: parameter counts, stage shapes, tower wiring, init, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import AlexNet, build_alexnet, load_model
from alexnet_tf.network.model import PAPER_PARAMETERS
from alexnet_tf.network.summary import parameters_by_paper_layer, summarize


@pytest.fixture(scope="module")
def paper_model():
    keras.utils.set_random_seed(0)
    return build_alexnet()


def conv_params(size, in_channels, filters):
    return size * size * in_channels * filters + filters


def test_parameter_counts_match_the_paper(paper_model):
    # Independent arithmetic from the paper's Figure 2 (kernels per layer and what each one sees).
    expected = {
        "conv1": conv_params(11, 3, 96),
        "conv2": conv_params(5, 48, 256),
        "conv3": conv_params(3, 256, 384),
        "conv4": conv_params(3, 192, 384),
        "conv5": conv_params(3, 192, 256),
        "fc6": 6 * 6 * 256 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "fc8": 4096 * 1000 + 1000,
    }
    assert expected == PAPER_PARAMETERS
    assert parameters_by_paper_layer(paper_model) == expected
    assert paper_model.count_params() == 60_965_224 == sum(expected.values())


def test_stage_shapes(paper_model):
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in paper_model.layers}
    assert shapes["conv1_a"] == (55, 55, 48)
    assert shapes["conv1_b_pool"] == (27, 27, 48)
    assert shapes["conv2_a"] == (27, 27, 128)
    assert shapes["conv2_b_pool"] == (13, 13, 128)
    assert shapes["conv3_a"] == (13, 13, 192)
    assert shapes["conv4_b"] == (13, 13, 192)
    assert shapes["conv5_a"] == (13, 13, 128)
    assert shapes["conv5_b_pool"] == (6, 6, 128)
    assert shapes["fc6_input"] == (9216,)
    assert shapes["fc8"] == (1000,)
    assert paper_model(np.zeros((2, 224, 224, 3), "float32")).shape == (2, 1000)


def test_layer_names_start_with_the_paper_layer(paper_model):
    names = [layer.name for layer in paper_model.layers if layer.name != "images"]
    assert all(name.split("_")[0] in PAPER_PARAMETERS for name in names), names
    assert {"conv2_a", "conv2_b", "conv4_a", "conv5_b", "fc6_a", "fc7_b", "fc8"} <= set(names)


def test_towers_are_isolated_except_at_conv3_and_the_fc_layers(paper_model):
    layer = paper_model.get_layer
    # A model from both towers' conv1 outputs to tower A's conv2 and conv3 outputs.
    sub = keras.Model([layer("conv1_a").output, layer("conv1_b").output],
                      [layer("conv2_a").output, layer("conv3_a").output, layer("fc6_a").output])
    rng = np.random.default_rng(0)
    h1a = tf.constant(rng.uniform(0, 1, (1, 55, 55, 48)), tf.float32)
    h1b = tf.constant(rng.uniform(0, 1, (1, 55, 55, 48)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h1b)
        conv2_a, conv3_a, fc6_a = sub([h1a, h1b])
        losses = [tf.reduce_sum(conv2_a), tf.reduce_sum(conv3_a), tf.reduce_sum(fc6_a)]
    gradients = [tape.gradient(loss, h1b, unconnected_gradients="zero").numpy() for loss in losses]
    assert np.all(gradients[0] == 0.0)  # conv2 of tower A never sees tower B
    assert np.abs(gradients[1]).max() > 0.0  # conv3 of tower A does
    assert np.abs(gradients[2]).max() > 0.0  # and so does fc6
    # And LRN must not mix the towers: conv1_a_lrn's input has exactly tower A's 48 channels.
    assert layer("conv1_a_lrn").input.shape[-1] == 48
    assert layer("conv2_b_lrn").input.shape[-1] == 128


def test_paper_init_statistics(paper_model):
    for layer in paper_model.layers:
        if not layer.weights:
            continue
        kernel, bias = (np.asarray(w) for w in layer.weights)
        assert abs(kernel.std() - 0.01) < 0.0005, layer.name
        assert abs(kernel.mean()) < 0.0005, layer.name
        expected_bias = 1.0 if layer.name.split("_")[0] in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert np.all(bias == expected_bias), layer.name


def test_he_init_statistics():
    model = build_alexnet(10, init="he")
    for name in ("conv1_a", "conv3_b", "fc7_a"):
        kernel, bias = (np.asarray(w) for w in model.get_layer(name).weights)
        fan_in = np.prod(kernel.shape[:-1])
        np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / fan_in), rtol=0.05)
        assert np.all(bias == 0.0)
    assert abs(np.asarray(model.get_layer("fc8").kernel).std() - 0.01) < 0.0005


def test_save_and_load_keras_file_gives_identical_outputs(tmp_path):
    model = build_alexnet(7, init="he", lrn="caffe", input_scale=0.5)
    x = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype("float32")
    model.save(tmp_path / "x.keras")
    loaded = load_model(tmp_path / "x.keras")
    assert isinstance(loaded, AlexNet)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


def test_the_caffe_variant_takes_227_crops_unpadded_with_the_same_parameters():
    model = build_alexnet(1000, variant="caffe", lrn="caffe")
    assert model.image_size == 227 and model.input_shape == (None, 227, 227, 3)
    names = [layer.name for layer in model.layers]
    assert "conv1_pad" not in names and {"conv1_lrn", "conv2_lrn"} <= set(names)
    assert model.get_layer("conv1_a").output.shape == (None, 55, 55, 48)
    assert model.get_layer("conv5_b_pool").output.shape == (None, 6, 6, 128)
    assert model.count_params() == sum(PAPER_PARAMETERS.values())
    assert model.get_config()["variant"] == "caffe"
    with pytest.raises(ValueError, match="variant"):
        build_alexnet(10, variant="vgg")


def test_dropout_only_in_training(paper_model):
    x = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_array_equal(paper_model(x), paper_model(x))
    assert not np.allclose(paper_model(x, training=True), paper_model(x, training=True))


def test_mixed_precision_gives_float32_logits():
    model = build_alexnet(10, dtype="mixed_bfloat16")
    assert model.get_layer("conv2_a").compute_dtype == "bfloat16"
    assert model(np.zeros((1, 224, 224, 3), "float32")).dtype == tf.float32


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"dropout": 1.0}, {"init": "xavier"}, {"lrn": "k1"},
                                    {"tower_devices": ("/GPU:0",)}, {"tower_devices": ("GPU zero", "/GPU:1")}])
def test_bad_arguments_name_the_problem(kwargs):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=next(iter(k for k in kwargs if k != "num_classes"), "num_classes")):
        build_alexnet(**kwargs)


def test_summary_lists_every_layer_with_its_tower(paper_model):
    text = summarize(paper_model)
    assert "60,965,224" in text and "37,752,832" in text
    assert any(line.startswith("conv2_b ") and line.rstrip().endswith("B") for line in text.splitlines())
    assert any(line.startswith("conv3_input ") and line.rstrip().endswith("both") for line in text.splitlines())


def test_xla_training_step_matches_the_graph_step():
    # jit_compile=True switches pooling to alexnet_tf.network.xla_forms and LRN's window sums to shifted slices; one
    # PaperSGD step must make the same update as the graph path (native pooling, band-matmul LRN) without XLA
    # (dropout off so both steps see the same network). test_layers checks each LRN form against NumPy.
    from alexnet_tf.network.layers import LocalResponseNormalization, OverlappingMaxPooling2D

    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(2, 224, 224, 3)).astype("float32")
    labels = np.array([1, 3])
    updates = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_alexnet(4, dropout=0.0, init="he")
        initial = [v.numpy() for v in model.trainable_variables]
        model.compile(jit_compile=jit)
        flagged = [layer.use_xla_form for layer in model.layers
                   if isinstance(layer, (OverlappingMaxPooling2D, LocalResponseNormalization))]
        assert len(flagged) == 10 and set(flagged) == {jit}
        model.fit(images, labels, batch_size=2, epochs=1, verbose=0, shuffle=False)
        updates[jit] = [v.numpy() - w for v, w in zip(model.trainable_variables, initial)]
    # The two paths sum in different orders (oneDNN or Eigen vs XLA), so they agree to float32 rounding: about
    # sqrt(n) * 2**-24 per reduction of length n <= 9216 over 8 layers, ~5e-5 relative; fc6-fc8 get 1e-3 (20x).
    # Their gradients come from forward values, which a max pool computes robustly. The conv layers' gradients
    # also pass *back* through the pools, where two window values closer than the paths' rounding difference
    # (a near-tie) can send one position's gradient to its neighbour in one path and not in the other: on an
    # avx512_bf16 EPYC that moved tower A's conv1/conv2 updates by 2e-3 (relative L2) while tower B agreed to
    # 1.6e-6. Such a flip moves one of the P >= 2 * 13 * 13 positions a kernel's gradient sums, so the conv layers
    # get 2e-2 in relative L2 norm; the bugs this test is for move it by far more (halving the second term
    # of the LRN gradient in the XLA form only: 0.17 to 0.54 on every conv layer).
    for variable, graph, xla in zip(model.trainable_variables, updates[False], updates[True]):
        assert np.abs(graph).max() > 0, f"{variable.path} did not move"
        if variable.path.startswith("fc"):
            np.testing.assert_allclose(xla, graph, rtol=1e-3, atol=1e-3 * np.abs(graph).max(), err_msg=variable.path)
        else:
            relative = np.linalg.norm(xla - graph) / np.linalg.norm(graph)
            assert relative < 2e-2, f"{variable.path}: XLA and graph updates differ by {relative:.2e} (L2)"
