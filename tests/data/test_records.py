"""The shard schema: tensorflow/models' ImageNet keys, label offsets, shard naming and completeness."""

import pytest
import tensorflow as tf

from alexnet_tf.data import records


def test_round_trip_with_label_offset():
    serialized = records.encode_example(b"jpeg bytes", 7, height=256, width=256, synset="n01440764", filename="a.jpg")
    raw = tf.train.Example.FromString(serialized).features.feature
    assert raw["image/class/synset"].bytes_list.value[0] == b"n01440764"
    assert raw["image/format"].bytes_list.value[0] == b"JPEG"
    parsed = records.parse(tf.constant(serialized), label_offset=1)
    assert parsed["image"].numpy() == b"jpeg bytes"
    assert int(parsed["label"]) == 6
    assert parsed["filename"].numpy() == b"a.jpg"


def test_list_shards_wants_the_complete_set(tmp_path):
    for i in (0, 2):
        (tmp_path / records.shard_name("train", i, 3)).write_bytes(b"")
    (tmp_path / records.shard_name("validation", 0, 1)).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="1 'train' shard\\(s\\) missing, e.g. index 1"):
        records.list_shards(tmp_path, "train")
    (tmp_path / records.shard_name("train", 1, 3)).write_bytes(b"")
    assert [p.name for p in records.list_shards(tmp_path, "train")] == [
        "train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003"]
    with pytest.raises(FileNotFoundError, match="no 'test-NNNNN"):
        records.list_shards(tmp_path, "test")
