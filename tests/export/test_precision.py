"""bfloat16 exports: bfloat16 weights behind the float32 signatures, answers within the bound bfloat16 rounding
allows (derived below, not observed), the agreement check that refuses a model that disagrees, and --precision."""

import io
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
from alexnet_tf import build_alexnet
from alexnet_tf.classifier.test_time import TestTime
from alexnet_tf.data import ops
from alexnet_tf.training import execution
from export import precision, saved_model
from tests.conftest import run_cli


def stored_precision(directory) -> str:
    """"bfloat16" when the SavedModel's variables are bfloat16 (as the local server reads it)."""
    from tensorflow.core.protobuf import saved_model_pb2

    from serving.servable import variables_precision

    proto = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    return variables_precision(proto.meta_graphs[0])

U = 2.0**-8
"""bfloat16's unit roundoff: 8 significant bits, rounded to nearest."""
ROUNDINGS = 3 * 7 + 2
"""Roundings to bfloat16 on the way to the logits: in each of conv1-5, fc6 and fc7 its weights, its product (float32
accumulation, then bfloat16) and its bias sum; and the outputs of the two LRNs (computed in float32). fc8 and the
softmax are float32."""
SIGMAS = 6
"""Gaussian tail of the bound: P(|error| > 6 sigma) ~ 2e-9 per logit."""

@pytest.fixture(scope="module")
def models(module_tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    model = build_alexnet(10, init="he", input_scale=1 / 64)
    mean = np.random.default_rng(0).uniform(90, 150, (256, 256, 3)).astype(np.float32)
    result = export.export(model, module_tmp_path / "export", mean_image=mean, precision="bfloat16")
    return model, mean, result


def probability_bound(model, mean, pixels, ten: bool) -> np.ndarray:
    """Per image, a bound on |p_bf16 - p_fp32| from the probabilistic model of rounding (Higham and Mary, 2019):
    each rounding multiplies a value by (1 + d), d independent and uniform in [-u, u] (variance u^2 / 3); a
    relative perturbation of a layer's inputs passes to its outputs at the same relative scale, so fc8's input h7
    reaches fc8 with relative noise of variance ROUNDINGS * u^2 / 3, and logit j moves by a zero-mean error with
    standard deviation u * sqrt(ROUNDINGS / 3) * sqrt(sum_i (W8_ij h7_i)^2). Softmax's Jacobian has infinity-norm
    max_i 2 p_i (1 - p_i) <= 1/2, and averaging over crops does not exceed the largest crop's bound."""
    test_time = TestTime(model, mean)
    crops = tf.reshape(ops.ten_crops(224)(test_time.centred(tf.constant(pixels))), [-1, 224, 224, 3]) if ten \
        else test_time.centre_crops(tf.constant(pixels))
    h7 = test_time.feature_model("fc7")(crops).numpy().astype(np.float64)
    kernel = model.get_layer("fc8").get_weights()[0].astype(np.float64)
    sigma = U * math.sqrt(ROUNDINGS / 3) * np.sqrt(h7**2 @ kernel**2)
    logit_bound = SIGMAS * sigma.max(axis=1)
    return 0.5 * logit_bound.reshape(len(pixels), -1).max(axis=1)


def float32_probabilities(model, mean, pixels, ten: bool) -> np.ndarray:
    """The float32 Keras model's softmax, written out in NumPy (averaged over the paper's 10 crops with `ten`)."""
    out = []
    for image in pixels.astype(np.float32) - mean:
        offsets = ((0, 0), (0, 32), (32, 0), (32, 32), (16, 16)) if ten else ((16, 16),)
        crops = [image[t : t + 224, x : x + 224] for t, x in offsets]
        crops += [c[:, ::-1] for c in crops] if ten else []
        logits = model.predict(np.stack(crops), verbose=0).astype(np.float64)
        softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append((softmax / softmax.sum(axis=1, keepdims=True)).mean(axis=0))
    return np.stack(out)


def test_the_weights_are_bfloat16_and_the_signatures_as_float32s(models, module_tmp_path):
    model, mean, result = models
    assert result.precision == "bfloat16" and stored_precision(result.path) == "bfloat16"
    float32 = export.export(model, module_tmp_path / "export", mean_image=mean)
    assert stored_precision(float32.path) == "float32"
    assert result.signatures == float32.signatures  # same inputs, outputs, dtypes (probabilities float32)
    written = json.loads((result.path / "assets.extra" / precision.AGREEMENT_FILE).read_text())
    assert written["images"] == 4 and written["source"] == "warm-up images" and written["top1"] == result.agreement.top1
    # The bfloat16 files hold half the bytes of the float32 ones (fc8, 41k of 57M parameters here, stays float32).
    size = {r: sum(f.stat().st_size for f in (r / "variables").iterdir()) for r in (result.path, float32.path)}
    assert size[result.path] < 0.55 * size[float32.path]


def test_tf_servings_session_path_agrees_with_float32_within_the_bfloat16_bound(models):
    model, mean, result = models
    pixels = np.random.default_rng(5).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(result.path))

        def run(name, value):
            signature = meta.signature_def[name]
            (info,) = signature.inputs.values()
            return session.run(signature.outputs["probabilities"].name, {info.name: value})

        pngs = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            pngs.append(buffer.getvalue())
        answers = {"center_crop": (run("center_crop", np.array(pngs, dtype=object)), False),
                   "from_pixels": (run("from_pixels", pixels), True)}
    for name, (probabilities, ten) in answers.items():
        assert probabilities.dtype == np.float32
        bound = probability_bound(model, mean, pixels, ten)
        assert bound.max() < 0.1, "the bound must be tight enough to catch a wrong export"
        difference = np.abs(probabilities - float32_probabilities(model, mean, pixels, ten)).max(axis=1)
        assert np.all(difference <= bound), (name, difference, bound)
        assert np.all(difference > 0), "a bfloat16 export that answers exactly as float32 is not bfloat16"


def test_max_disagreements_is_the_binomial_tail_at_the_nominal_rate():
    for images in (1, 4, 50, 500, 1000):
        p = precision.NOMINAL_DISAGREEMENT
        pmf = [math.exp(math.lgamma(images + 1) - math.lgamma(k + 1) - math.lgamma(images - k + 1)
                        + k * math.log(p) + (images - k) * math.log1p(-p)) for k in range(images + 1)]
        tail = np.cumsum(pmf[::-1])[::-1]  # tail[d] = P(X >= d)
        allowed = precision.max_disagreements(images)
        assert tail[allowed] >= precision.SIGNIFICANCE
        assert allowed == images or tail[allowed + 1] < precision.SIGNIFICANCE
    assert precision.max_disagreements(500) == 13 and precision.max_disagreements(4) == 1


def perturbed(model, scale):
    """A copy whose every weight moved by `scale` times that weight's standard deviation (a faulty conversion)."""
    rng = np.random.default_rng(11)
    copy = saved_model.inference_copy(model)
    copy.set_weights([w + scale * (w.std() + 1e-3) * rng.standard_normal(w.shape).astype(w.dtype)
                      for w in model.get_weights()])
    return copy


def coloured_images(count=24):
    """Noisy images of different colours: a random-init network gives them different classes."""
    rng = np.random.default_rng(6)
    colours = rng.integers(0, 256, (count, 1, 1, 3))
    return np.clip(colours + rng.normal(0, 20, (count, 256, 256, 3)), 0, 255).astype(np.uint8)


def test_the_check_refuses_a_model_that_disagrees(models):
    model, mean, _ = models
    pixels = coloured_images()
    candidate = saved_model.inference_copy(model, "bfloat16")
    sound = precision.compare(saved_model.inference_copy(model), candidate, mean, pixels)
    precision.check(sound)  # bfloat16 rounding alone passes
    faulty = precision.compare(perturbed(model, 4.0), candidate, mean, pixels, source="test images")
    assert faulty.disagreements > precision.max_disagreements(24)
    with pytest.raises(precision.AgreementError, match=r"disagrees with float32 on \d+ of 24 test images"):
        precision.check(faulty)
    precision.check(faulty, force=True)


@pytest.fixture
def faulty_bfloat16(monkeypatch, models):
    """Make the export's bfloat16 copy a perturbed one, as a broken conversion would be."""
    original = saved_model.inference_copy

    def copy(model, dtype="float32"):
        made = original(model, dtype)
        if dtype == "bfloat16":
            made.set_weights(perturbed(model, 4.0).get_weights())
        return made

    monkeypatch.setattr(saved_model, "inference_copy", copy)


def test_export_refuses_a_disagreeing_bfloat16_model_unless_forced(models, faulty_bfloat16, tmp_path):
    model, mean, _ = models
    images = (coloured_images(), None, "test images")
    with pytest.raises(export.ExportError, match="disagrees with float32"):
        export.export(model, tmp_path, mean_image=mean, precision="bfloat16", agreement_images=images)
    assert not (tmp_path / "alexnet").exists() or not list((tmp_path / "alexnet").iterdir())
    forced = export.export(model, tmp_path, mean_image=mean, precision="bfloat16", agreement_images=images,
                           force_precision=True)
    assert forced.precision == "bfloat16" and not forced.agreement.acceptable


def test_auto_is_bfloat16_only_where_native_and_agreeing(models, faulty_bfloat16, monkeypatch):
    # The choice itself, without writing exports (each SavedModel write keeps ~230 MB alive in this process,
    # through Keras' ExportArchive): `export` publishes the network `_choose_precision` returns.
    model, mean, _ = models
    monkeypatch.setattr(execution, "native_bfloat16", lambda: False)
    _, chosen, agreement, note = saved_model._choose_precision(model, mean, "auto", None, False)
    assert chosen == "float32" and agreement is None and "no native bfloat16" in note
    monkeypatch.setattr(execution, "native_bfloat16", lambda: True)
    network, chosen, agreement, note = saved_model._choose_precision(
        model, mean, "auto", (coloured_images(), None, "test images"), False)
    assert chosen == "float32" and "disagrees" in note and not agreement.acceptable
    assert {w.dtype for w in network.weights} == {"float32"}


def test_auto_is_bfloat16_on_a_native_cpu_when_it_agrees(models, monkeypatch):
    model, mean, _ = models
    monkeypatch.setattr(execution, "native_bfloat16", lambda: True)
    network, chosen, agreement, _ = saved_model._choose_precision(model, mean, "auto", None, False)
    assert chosen == "bfloat16" and agreement.acceptable and "bfloat16" in {w.dtype for w in network.weights}


@pytest.mark.slow
def test_the_export_command_compares_on_the_runs_validation_images(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    # forced: the smoke run is a few steps from random, so near-tied answers may flip on some CPU; what is checked
    # here is where the images come from and what is printed and written
    result = run_cli("export", str(run_dir), "--base-dir", str(tmp_path), "--precision", "bfloat16",
                     "--force-precision")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "bfloat16 vs float32 on " in result.stdout and "'validation' images of" in result.stdout
    assert "top-1 error" in result.stdout and "exported version 1 (bfloat16)" in result.stdout
    written = json.loads((tmp_path / "alexnet" / "1" / "assets.extra" / precision.AGREEMENT_FILE).read_text())
    assert written["images"] > 4 and written["float32_top1_error"] is not None
    bad = run_cli("export", str(run_dir), "--base-dir", str(tmp_path), "--precision", "bfloat16",
                  "--agreement-images", "0")
    assert bad.returncode == 2 and "--agreement-images must be at least 1" in bad.stderr
