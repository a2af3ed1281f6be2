"""The TFRecord schema: the key layout of tensorflow/models' ImageNet scripts, so existing ImageNet shards work."""

from __future__ import annotations

import pathlib
import re

import tensorflow as tf

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}

_SHARD = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_example(
    image: bytes, label: int, *, height: int, width: int, synset: str = "", filename: str = "", fmt: str = "JPEG"
) -> bytes:
    """A serialized tf.train.Example in the tensorflow/models ImageNet layout."""
    feature = {
        "image/encoded": _bytes(image),
        "image/class/label": _int(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/height": _int(height),
        "image/width": _int(width),
        "image/format": _bytes(fmt.encode()),
        "image/filename": _bytes(filename.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(serialized: tf.Tensor, label_offset: int = 0) -> dict[str, tf.Tensor]:
    """{'image': encoded bytes, 'label': 0-based int32, 'filename': string} from one serialized example."""
    example = tf.io.parse_single_example(serialized, FEATURES)
    return {
        "image": example["image/encoded"],
        "label": tf.cast(example["image/class/label"] - label_offset, tf.int32),
        "filename": example["image/filename"],
    }


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00128`, the tensorflow/models naming."""
    return f"{split}-{index:05d}-of-{count:05d}"


def list_shards(directory: str | pathlib.Path, split: str) -> list[pathlib.Path]:
    """The complete, sorted set of `split` shards in `directory`; raises naming what is missing."""
    directory = pathlib.Path(directory)
    found: dict[int, int] = {}
    paths = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        match = _SHARD.match(path.name)
        if match and match["split"] == split:
            found[int(match["index"])] = int(match["count"])
            paths.append(path)
    if not paths:
        raise FileNotFoundError(f"no '{split}-NNNNN-of-NNNNN' shards in {directory}")
    counts = set(found.values())
    if len(counts) != 1:
        raise ValueError(f"{directory}: '{split}' shards disagree on their total: {sorted(counts)}")
    missing = sorted(set(range(counts.pop())) - set(found))
    if missing:
        raise FileNotFoundError(
            f"{directory}: {len(missing)} '{split}' shard(s) missing, e.g. index {missing[0]}; "
            "re-run `alexnet-tf prepare` to finish them"
        )
    return paths
