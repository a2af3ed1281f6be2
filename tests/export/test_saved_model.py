"""The exported SavedModel: each signature against an independent NumPy path, the TF1 Session path TF Serving
takes, bad inputs, device annotations, versions and atomic publishing."""

import io
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
from alexnet_tf import build_alexnet

LABELS = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def exported(module_tmp_path):
    import keras

    keras.utils.set_random_seed(7)
    model = build_alexnet(10, init="he", input_scale=1 / 64)
    mean = np.random.default_rng(0).uniform(90, 150, (256, 256, 3)).astype(np.float32)
    base = module_tmp_path / "export"
    result = export.export(model, base, labels=LABELS, mean_image=mean)
    return model, mean, result, tf.saved_model.load(str(result.path))


def encode(pixels, fmt="PNG", **kwargs):
    buffer = io.BytesIO()
    (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def numpy_ten_crop_probabilities(model, pixels, mean):
    """The paper's test procedure written out in NumPy around the Keras model."""
    out = []
    for image in pixels.astype(np.float32) - mean:
        crops = [image[t : t + 224, x : x + 224] for t, x in ((0, 0), (0, 32), (32, 0), (32, 32), (16, 16))]
        crops += [c[:, ::-1] for c in crops]
        logits = model.predict(np.stack(crops), verbose=0).astype(np.float64)
        softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append((softmax / softmax.sum(axis=1, keepdims=True)).mean(axis=0))
    return np.stack(out)


def test_layout_signatures_assets_and_warmup(exported):
    _, _, result, _ = exported
    path = result.path
    assert path.name == "1" and result.version == 1
    assert (path / "assets" / "labels.txt").read_text().split() == LABELS
    assert (path / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    assert set(result.signatures) == {"serving_default", "center_crop", "from_pixels"}
    assert result.signatures["serving_default"]["inputs"] == {"image_bytes": "string [None]"}
    assert result.signatures["from_pixels"]["inputs"] == {"images": "uint8 [None, 256, 256, 3]"}
    for signature in result.signatures.values():
        assert signature["outputs"] == {"probabilities": "float32 [None, 10]", "classes": "int32 [None, 5]",
                                        "scores": "float32 [None, 5]", "labels": "string [None, 5]"}
    assert not [p for p in path.parent.iterdir() if not p.name.isdigit()]  # no staging left behind


def test_from_pixels_is_the_papers_ten_crop_average(exported):
    model, mean, _, loaded = exported
    pixels = np.random.default_rng(1).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    out = loaded.signatures["from_pixels"](images=tf.constant(pixels))
    expected = numpy_ten_crop_probabilities(model, pixels, mean)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    top = np.argsort(-expected, axis=1)[:, :5]
    np.testing.assert_array_equal(out["classes"].numpy(), top)
    np.testing.assert_allclose(out["scores"].numpy(), np.take_along_axis(expected, top, 1), atol=1e-5)
    assert [[s.decode() for s in row] for row in out["labels"].numpy()] == [[LABELS[i] for i in r] for r in top]


def test_serving_default_on_a_256_image_equals_from_pixels_on_its_decoded_pixels(exported):
    _, _, _, loaded = exported
    pixels = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    jpeg = encode(pixels, "JPEG", quality=90)
    decoded = tf.io.decode_jpeg(jpeg).numpy()
    by_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg]))
    by_pixels = loaded.signatures["from_pixels"](images=tf.constant(decoded[None]))
    np.testing.assert_allclose(by_bytes["probabilities"], by_pixels["probabilities"], atol=1e-6)


def test_center_crop_is_the_model_on_the_centre_crop(exported):
    model, mean, _, loaded = exported
    pixels = np.random.default_rng(3).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    out = loaded.signatures["center_crop"](image_bytes=tf.constant([encode(p) for p in pixels]))
    logits = model.predict((pixels.astype(np.float32) - mean)[:, 16:240, 16:240], verbose=0).astype(np.float64)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], softmax / softmax.sum(1, keepdims=True), atol=1e-5)


def test_any_size_grayscale_rgba_and_animated_gif(exported):
    _, _, _, loaded = exported
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (180, 300, 3), dtype=np.uint8)
    frames = [Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)) for _ in range(3)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first_frame = encode(frames[0], "GIF")
    batch = [encode(rgb, "JPEG"), encode(Image.fromarray(rgb).convert("L"), "PNG"),
             encode(Image.fromarray(rgb).convert("RGBA"), "PNG"), encode(rgb, "BMP"), gif, first_frame]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(batch))["probabilities"].numpy()
    assert out.shape == (6, 10) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[4], out[5], atol=1e-6)  # only the first frame of an animation counts


@pytest.mark.parametrize("data, message", [
    (b"", "empty image bytes"),
    (b"GARBAGE GARBAGE", "not an image"),
    ("truncated", "Invalid JPEG data"),
    ("huge", "image too large"),
])
def test_bad_inputs_are_invalid_argument_naming_the_problem(exported, data, message):
    _, _, _, loaded = exported
    if data == "truncated":
        data = encode(np.zeros((64, 64, 3), np.uint8), "JPEG")[:200]
    elif data == "huge":
        data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["serving_default"](image_bytes=tf.constant([data]))


def test_the_tf1_session_path_runs_every_signature(exported):
    _, _, result, loaded = exported
    results = export.verify_with_session(result.path)
    pixels = export.saved_model.warmup_inputs()["from_pixels"]
    direct = loaded.signatures["from_pixels"](images=tf.constant(pixels))
    np.testing.assert_allclose(results["from_pixels"]["probabilities"], direct["probabilities"], atol=1e-6)


def test_every_weight_is_stored_once(exported):
    """The checkpoint holds the model's parameters exactly once: tracking the Keras model in ExportArchive on top
    of the endpoints' captures wrote each weight twice (keras-team/keras#23553), doubling disk and TF Serving RAM."""
    model, _, result, _ = exported
    stored = tf.train.list_variables(str(result.path / "variables" / "variables"))
    counts = [int(np.prod(shape)) for name, shape in stored if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert sum(counts) == model.count_params()


def test_no_device_annotations_and_only_stock_ops(exported):
    """TF Serving places the graph itself and loads no custom ops: the training step's native LRN must not leak."""
    from tensorflow.core.protobuf import saved_model_pb2

    _, _, result, _ = exported
    proto = saved_model_pb2.SavedModel.FromString((result.path / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    assert not any("GPU" in node.device for node in graph.node)
    op_types = {node.op for node in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert not {op for op in op_types if op.startswith("Alexnet")}
    for function in graph.library.function:
        devices = {node.device for node in function.node_def}
        assert not any("GPU" in d for d in devices), function.signature.name
        if not any(word in function.signature.name for word in ("save", "restore", "Save", "Restore")):
            assert devices <= {""}, (function.signature.name, devices)


def test_versions_count_up_and_existing_ones_are_kept(exported, tmp_path):
    model, _, _, _ = exported
    (tmp_path / "alexnet" / "7").mkdir(parents=True)
    (tmp_path / "alexnet" / "7" / "marker").write_text("old")
    assert export.next_version(tmp_path / "alexnet") == 8
    with pytest.raises(export.ExportError, match="exists"):
        export.export_saved_model(model, tmp_path, version=7)
    assert (tmp_path / "alexnet" / "7" / "marker").read_text() == "old"
    with pytest.raises(ValueError, match="3 labels for a model with 10 classes"):
        export.export_saved_model(model, tmp_path, labels=["a", "b", "c"])
    assert sorted(p.name for p in (tmp_path / "alexnet").iterdir()) == ["7"]


def test_a_mixed_precision_model_exports_float32(tmp_path):
    model = build_alexnet(3, init="he", dtype="mixed_bfloat16")
    path = export.export_saved_model(model, tmp_path, name="mixed", mean_image=(120.0, 110.0, 100.0))
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["from_pixels"](images=tf.zeros((1, 256, 256, 3), tf.uint8))
    assert out["probabilities"].dtype == tf.float32 and out["classes"].shape == (1, 3)
    assert pathlib.Path(path).name == "1"


def test_a_full_disk_mid_export_leaves_the_versions_as_they_were(exported, monkeypatch):
    import keras

    from alexnet_tf.process import disk

    model, mean, result, _ = exported
    before = sorted(p.name for p in result.path.parent.iterdir())

    def full(self, path, **kwargs):  # what SaveV2 raised on a full tmpfs, after writing part of the variables
        (pathlib.Path(path) / "variables").mkdir(parents=True)
        (pathlib.Path(path) / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables/part-0.tempstate1; No space left on "
                                               "device [Op:SaveV2]")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", full)  # the backend's subclass
    with pytest.raises(disk.WriteError) as caught:
        export.export(model, result.path.parent.parent, labels=LABELS, mean_image=mean)
    assert str(caught.value).startswith(f"cannot write {result.path.parent / '2'}: no space left on the device (")
    assert "needed" in str(caught.value) and str(caught.value).endswith("the versions there are as they were")
    assert sorted(p.name for p in result.path.parent.iterdir()) == before  # no version 2, no staging directory
