"""Top-1 and top-5 error on a split, with the centre crop and with the paper's 10 crops (softmax averaged)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.data import pipeline
from alexnet_tf.data.sources import RecordsSource
from alexnet_tf.data.stats import Stats
from alexnet_tf.process import atomic
from alexnet_tf.process.progress import progress_bar


@dataclasses.dataclass(frozen=True)
class Errors:
    top1: float
    top5: float
    examples: int


def _topk_errors(probabilities: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """Numbers of examples whose label is not the top-1 / not among the top-5 probabilities."""
    order = np.argsort(-probabilities, axis=1)
    top1 = int(np.sum(order[:, 0] != labels))
    top5 = int(np.sum(~np.any(order[:, :5] == labels[:, None], axis=1)))
    return top1, top5


def evaluate(model: keras.Model, source: RecordsSource, stats: Stats, *, ten_crop: bool, batch_size: int = 64,
             progress: bool = True) -> Errors:
    """Errors of `model` (logits) on `source`, with crops of the model's input size; with `ten_crop` the softmax is
    averaged over the paper's 10 crops."""

    @tf.function(reduce_retracing=True)
    def probabilities(images):
        if ten_crop:  # [B, 10, S, S, 3] -> one batch of B*10 crops -> average the 10 softmax vectors
            crops = tf.reshape(images, [-1, *images.shape[2:]])
            softmax = tf.nn.softmax(tf.cast(model(crops, training=False), tf.float32))
            return tf.reduce_mean(tf.reshape(softmax, [tf.shape(images)[0], 10, -1]), axis=1)
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))

    dataset = pipeline.eval_dataset(source, stats, batch_size, ten_crop=ten_crop,
                                    crop_size=int(model.input_shape[1]))
    top1 = top5 = seen = 0
    bar = None
    try:
        total = len(source)
        bar = progress_bar(total, "image") if progress else None
    except TypeError:
        total = None
    for images, labels in dataset:
        wrong1, wrong5 = _topk_errors(probabilities(images).numpy(), labels.numpy())
        top1, top5, seen = top1 + wrong1, top5 + wrong5, seen + len(labels)
        if bar is not None:
            bar.update(min(seen, total))
    if seen == 0:
        raise ValueError(f"{source.uri}: the '{source.split}' split has no readable examples")
    return Errors(top1 / seen, top5 / seen, seen)


def format_table(rows: dict[str, Errors], split: str) -> str:
    """The results in the paper's Table 2 style."""
    lines = [f"{'Model':<28}{'Top-1 (' + split + ')':>20}{'Top-5 (' + split + ')':>20}", "-" * 68]
    lines += [f"{name:<28}{e.top1:>19.1%} {e.top5:>19.1%}" for name, e in rows.items()]
    examples = next(iter(rows.values())).examples
    lines.append(f"({examples} images; the paper's single CNN: 40.7% / 18.2% on ILSVRC-2012 validation)")
    return "\n".join(lines)


def write_json(rows: dict[str, Errors], path: str | pathlib.Path, **extra) -> None:
    """The results as JSON, written under a temporary name, then renamed."""
    path = pathlib.Path(path)
    payload = {**extra, "results": {name: dataclasses.asdict(e) for name, e in rows.items()}}
    atomic.write_text(path, json.dumps(payload, indent=2) + "\n")
