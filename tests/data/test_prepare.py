"""`prepare`: awkward images converted or skipped with reasons, statistics right, interrupted runs resumed."""

import json

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import prepare as prepare_module
from alexnet_tf.data import records
from alexnet_tf.data.prepare import prepare
from alexnet_tf.data.sources import open_dataset
from alexnet_tf.data.stats import Stats


def read_shards(directory, split):
    out = []
    for path in records.list_shards(directory, split):
        for serialized in tf.data.TFRecordDataset(str(path)):
            example = records.parse(serialized)
            image = tf.io.decode_jpeg(example["image"]).numpy()
            out.append((example["filename"].numpy().decode(), int(example["label"]), image))
    return out


def test_awkward_folder_is_converted_or_skipped_with_reasons(awkward_folder, tmp_path):
    out = tmp_path / "shards"
    manifest = prepare(f"folder:{awkward_folder}", out, shards={"train": 3}, progress=False)
    written = read_shards(out, "train") + read_shards(out, "validation")  # a flat folder holds out 10%
    names = {name.rsplit("/", 1)[-1] for name, _, _ in written}
    assert {"cmyk.jpg", "gray.jpg", "actually_png.jpg"} <= names
    assert all(image.shape == (256, 256, 3) for _, _, image in written)
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"tiny.png", "garbage.jpg", "empty.jpg", "cut.jpg"}
    assert "too small" in reasons["tiny.png"]
    assert "not an image" in reasons["garbage.jpg"]
    assert "empty" in reasons["empty.jpg"]
    assert "Invalid JPEG data" in reasons["cut.jpg"]
    converted = manifest["converted"]
    assert converted["CMYK JPEG converted to RGB"]["count"] == 1
    assert converted["grayscale JPEG converted to RGB"]["count"] == 1
    assert converted["PNG data in a .jpg file"]["count"] == 1
    assert sum(manifest["counts"].values()) == len(written) and manifest["classes"] == ["cats", "dogs"]
    assert manifest["label_offset"] == 0 and manifest["image_size"] == 256
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_statistics_are_those_of_the_training_images(tmp_path):
    # 256x256 PNGs pass through the resize untouched, so NumPy can compute the statistics from the originals.
    from tests.data.conftest import encode

    rng = np.random.default_rng(3)
    originals = []
    for split, count in (("train", 5), ("validation", 2)):
        for name in ("a", "b"):
            (tmp_path / "src" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
                pixels[..., 2] = pixels[..., 0] // 2 + 60  # correlated channels
                (tmp_path / "src" / split / name / f"{i}.png").write_bytes(encode(pixels, "PNG"))
                if split == "train":
                    originals.append(pixels)
    prepare(f"folder:{tmp_path / 'src'}", tmp_path / "out", progress=False)
    stats = Stats.load(tmp_path / "out" / "stats.npz")
    images = np.stack(originals).astype(np.float64)
    np.testing.assert_allclose(stats.mean_image, images.mean(axis=0), rtol=1e-6)
    pixels = images.reshape(-1, 3) / 255.0
    covariance = np.cov(pixels.T, bias=True)
    np.testing.assert_allclose(stats.rgb_covariance, covariance, atol=1e-9)
    eigval, eigvec = np.linalg.eigh(covariance)
    np.testing.assert_allclose(stats.eigval, eigval[::-1], atol=1e-9)
    np.testing.assert_allclose(np.abs(stats.eigvec), np.abs(eigvec[:, ::-1]), atol=1e-6)
    assert stats.count == 10


def test_labels_follow_the_sorted_class_folders(tiny_demo, tmp_path):
    prepare(f"folder:{tiny_demo}", tmp_path / "out", progress=False)
    for name, label, _ in read_shards(tmp_path / "out", "validation"):
        assert name.split("/")[-2] == open_dataset(f"folder:{tiny_demo}", "validation").classes[label]


def test_an_interrupted_prepare_resumes_and_skips_finished_shards(tiny_demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = prepare_module._write_shard
    calls = []

    def failing(out_dir, source, job, convert, bar):
        if job.split == "train" and job.index == 2:
            raise KeyboardInterrupt  # the machine went down in the middle of the run
        calls.append((job.split, job.index))
        return real(out_dir, source, job, convert, bar)

    monkeypatch.setattr(prepare_module, "_write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(f"folder:{tiny_demo}", out, shards={"train": 4, "validation": 1}, options=_one_worker(), progress=False)
    assert not (out / "manifest.json").exists()
    assert not (out / "train-00002-of-00004").exists()
    finished = sorted(p.name for p in out.glob("train-*"))

    calls.clear()
    monkeypatch.setattr(prepare_module, "_write_shard", lambda *a: (calls.append(a[2].index), real(*a))[1])
    manifest = prepare(f"folder:{tiny_demo}", out, shards={"train": 4, "validation": 1}, progress=False)
    assert 2 in calls and not any(f"train-0000{i}-of-00004" in finished for i in calls if i != 2)
    assert manifest["counts"] == {"train": 60, "validation": 20}
    assert len(read_shards(out, "train")) == 60
    assert not list(out.glob(".*.tmp-*"))


def _one_worker():
    return prepare_module.PrepareOptions(workers=1)


def test_tfds_source_through_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        manifest = prepare("tfds:imagenet2012", tmp_path / "imagenet", manual_dir=str(tmp_path), data_dir=str(tmp_path),
                           shards={"train": 2, "validation": 1}, options=_one_worker(), progress=False)
    # (one worker: the mock's patched file system is not thread-safe; real tfds reads are)
    # The mock draws random image sizes; the few too small to upscale are skipped, the rest written.
    assert all("too small" in s["reason"] for s in manifest["skipped"])
    for split in ("train", "validation"):
        skipped = sum(s["split"] == split for s in manifest["skipped"])
        assert manifest["counts"][split] + skipped == 6
    assert manifest["classes"] == tfds.builder("imagenet2012").info.features["label"].names  # tfds' own order
    assert len(read_shards(tmp_path / "imagenet", "train")) == manifest["counts"]["train"] > 0


def test_smoke_training_on_mocked_imagenet2012(tmp_path):
    """`tfds:imagenet2012` end to end without a download: prepared from tfds' mock, then trained on."""
    import tensorflow_datasets as tfds

    from alexnet_tf.network.model import load_model
    from alexnet_tf.training import config
    from alexnet_tf.training import loop as train

    with tfds.testing.mock_data(num_examples=24):
        prepare("tfds:imagenet2012", tmp_path / "imagenet", manual_dir=str(tmp_path), data_dir=str(tmp_path),
                shards={"train": 2, "validation": 1}, options=_one_worker(), progress=False)
    settings = config.preset("smoke").override({"data.dataset": f"records:{tmp_path / 'imagenet'}",
                                                "train.steps_per_epoch": 2, "train.validation_steps": 1})
    result = train.train(settings, tmp_path / "run", verbose=0)
    labels = (tmp_path / "run" / "labels.txt").read_text().splitlines()
    assert labels == tfds.builder("imagenet2012").info.features["label"].names
    model = load_model(tmp_path / "run" / "final.keras")
    assert model.num_classes == 1000 and int(model.optimizer.iterations.numpy()) == 2
    assert np.isfinite(result.history["loss"][-1])


def test_a_full_disk_keeps_the_finished_shards_and_writes_no_manifest(tiny_demo, tmp_path, monkeypatch):
    import errno
    import os

    from alexnet_tf.process import disk

    out = tmp_path / "out"
    real = tf.io.TFRecordWriter

    class FillsUp(real):  # the disk is full when the third training shard is written
        def __init__(self, path, *args):
            super().__init__(path, *args)
            self.full = "train-00002" in str(path)

        def write(self, record):
            if self.full:
                raise tf.errors.ResourceExhaustedError(None, None, f"x; {os.strerror(errno.ENOSPC)}")
            super().write(record)

    monkeypatch.setattr(prepare_module.tf.io, "TFRecordWriter", FillsUp)
    with pytest.raises(disk.WriteError) as caught:
        prepare(f"folder:{tiny_demo}", out, shards={"train": 4, "validation": 1}, options=_one_worker(), progress=False)
    message = str(caught.value)
    assert message.startswith(f"cannot write {out}/train-00002-of-00004: no space left on the device (")
    assert "needed" in message and message.endswith("finished shards are kept: free space and run the same command "
                                                    "to go on")
    assert {"train-00000-of-00004", "train-00001-of-00004"} <= {p.name for p in out.glob("*-of-*")}
    assert not list(out.rglob("*.tmp-*")) and not (out / "manifest.json").exists()
    assert not list(out.rglob("*train-00002*"))  # nor its summary or statistics
    monkeypatch.undo()
    assert prepare(f"folder:{tiny_demo}", out, shards={"train": 4, "validation": 1}, progress=False)["counts"] == {
        "train": 60, "validation": 20}


def test_progress_in_a_log_is_plain_lines(tiny_demo, tmp_path, capsys):
    """stdout is not a terminal here (captured), as in CI or under Slurm: no carriage returns, backspaces or colour
    codes, the counts of the listing and of the images written."""
    prepare(f"folder:{tiny_demo}", tmp_path / "shards", progress=True)
    out = capsys.readouterr().out
    assert not set(out) & {"\r", "\b", "\x1b"}, repr(out[:300])
    assert "10/10 class folders (100%)" in out and "80/80 images (100%)" in out
