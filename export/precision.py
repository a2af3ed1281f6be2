"""bfloat16 exports and the check that they answer as the float32 model does.

A bfloat16 export stores the weights in bfloat16 and runs the convolutions and matmuls in bfloat16 (oneDNN's native
kernels on CPUs with avx512_bf16 or AMX); LRN, fc8 and the softmax stay float32, so the outputs keep their float32
types. Before such a version is published, its centre-crop answers are compared with the float32 model's on the
run's validation images (or the warm-up images): `Agreement`, written to `assets.extra/precision.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np
import tensorflow as tf

from alexnet_tf.classifier.test_time import TestTime
from alexnet_tf.network.model import AlexNet

PRECISIONS = ("float32", "bfloat16")
CHOICES = (*PRECISIONS, "auto")
AGREEMENT_FILE = "precision.json"

NOMINAL_DISAGREEMENT = 0.01
"""The top-1 disagreement a sound bfloat16 export may show (the target: >= 99% agreement). bfloat16 keeps 8
significant bits (relative rounding <= 2^-8), so only images whose two best float32 probabilities nearly tie can
change their answer."""

SIGNIFICANCE = 1e-3
"""An export is refused when its disagreements would happen with probability below this at the nominal rate: on the
demo's 500 validation images, more than 13 of them (2.6%); on the 4 warm-up images, 2 or more. So sampling noise does
not refuse a sound export, and a faulty conversion (answers near chance) never passes."""


class AgreementError(ValueError):
    """The bfloat16 model disagrees with the float32 one more than rounding explains."""


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How a bfloat16 model's centre-crop answers compare with the float32 model's on the same images."""

    images: int
    source: str  # where the images came from
    top1: float  # fraction of images with the same top-1 class
    top5_overlap: float  # mean fraction of the float32 top-5 classes also in the bfloat16 top-5
    max_probability_difference: float  # the largest |p_bf16 - p_fp32| over all images and classes
    float32_top1_error: float | None = None  # with labels: each model's top-1 error on the images
    bfloat16_top1_error: float | None = None

    @property
    def disagreements(self) -> int:
        return round((1.0 - self.top1) * self.images)

    @property
    def acceptable(self) -> bool:
        return self.disagreements <= max_disagreements(self.images)

    def line(self) -> str:
        """One line for the export's output."""
        text = (f"bfloat16 vs float32 on {self.images} {self.source}: top-1 agreement {self.top1:.1%}, top-5 overlap "
                f"{self.top5_overlap:.1%}, max probability difference {self.max_probability_difference:.4f}")
        if self.float32_top1_error is not None:
            text += (f"; top-1 error {self.bfloat16_top1_error:.1%} (bfloat16) vs {self.float32_top1_error:.1%} "
                     "(float32)")
        return text

    def to_json(self) -> str:
        return json.dumps({"precision": "bfloat16", "reference": "float32", **dataclasses.asdict(self),
                           "max_disagreements": max_disagreements(self.images)}, indent=2) + "\n"


def max_disagreements(images: int) -> int:
    """The most top-1 disagreements among `images` that `NOMINAL_DISAGREEMENT` explains at `SIGNIFICANCE`
    (the largest d with P(X >= d) >= SIGNIFICANCE for X ~ Binomial(images, NOMINAL_DISAGREEMENT))."""
    p = NOMINAL_DISAGREEMENT
    tail = 1.0  # P(X >= d), starting at d = 0
    for d in range(images + 1):
        if tail < SIGNIFICANCE:
            return d - 1
        tail -= math.comb(images, d) * p**d * (1 - p) ** (images - d)
    return images


def centre_probabilities(model: AlexNet, mean_image: np.ndarray, pixels: np.ndarray, batch_size: int = 50
                         ) -> np.ndarray:
    """float32 centre-crop probabilities [N, classes] of uint8 [N, 256, 256, 3] pixels, as the export computes them."""
    test_time = TestTime(model, mean_image)  # eagerly: the same kernels, and no graph traced per export
    return np.concatenate([test_time.centre_probabilities(tf.constant(pixels[i : i + batch_size])).numpy()
                           for i in range(0, len(pixels), batch_size)])


def compare(reference: AlexNet, candidate: AlexNet, mean_image: np.ndarray, pixels: np.ndarray,
            labels: np.ndarray | None = None, *, source: str = "images") -> Agreement:
    """`Agreement` of `candidate` (the bfloat16 copy) with `reference` (float32) on uint8 256x256 `pixels`."""
    if len(pixels) == 0:
        raise ValueError("no images to compare the precisions on")
    p32 = centre_probabilities(reference, mean_image, pixels)
    p16 = centre_probabilities(candidate, mean_image, pixels)
    top5_32, top5_16 = np.argsort(-p32, axis=1)[:, :5], np.argsort(-p16, axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(top5_32, top5_16, strict=True)])
    errors = {}
    if labels is not None:
        labels = np.asarray(labels)
        errors = {"float32_top1_error": float(np.mean(top5_32[:, 0] != labels)),
                  "bfloat16_top1_error": float(np.mean(top5_16[:, 0] != labels))}
    return Agreement(len(pixels), source, float(np.mean(top5_32[:, 0] == top5_16[:, 0])), float(overlap),
                     float(np.max(np.abs(p32 - p16))), **errors)


def check(agreement: Agreement, *, force: bool = False) -> None:
    """Raise AgreementError when the disagreements exceed what bfloat16 rounding explains (unless `force`)."""
    if agreement.acceptable or force:
        return
    raise AgreementError(
        f"the bfloat16 model disagrees with float32 on {agreement.disagreements} of {agreement.images} "
        f"{agreement.source} (top-1 agreement {agreement.top1:.1%}; at most {max_disagreements(agreement.images)} "
        "are explained by bfloat16 rounding): export float32, or force it (--force-precision)")


def run_validation_images(run_dir: str | pathlib.Path, limit: int = 1000
                          ) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Up to `limit` uint8 256x256 validation images of a training run, their labels and a description, when the
    run's data set is prepared on this machine (None otherwise: a preset, no validation split, data elsewhere)."""
    from alexnet_tf.data import pipeline
    from alexnet_tf.data.sources import DatasetError, open_dataset
    from alexnet_tf.training import config as config_module
    from alexnet_tf.training.loop import prepared_location

    config_file = pathlib.Path(run_dir) / "config.json"
    if not config_file.is_file():
        return None
    config = config_module.Config.from_dict(config_module.load(config_file))
    split = config.data.validation_split
    uri = config.data.dataset
    if not split:
        return None
    if not uri.startswith("records:"):
        location = prepared_location(config)
        if not (location / "manifest.json").is_file():
            return None
        uri = f"records:{location}"
    try:
        source = open_dataset(uri, split, label_offset=config.data.label_offset, num_classes=config.data.num_classes)
    except DatasetError:
        return None
    pixels, labels = [], []
    for images, batch_labels, _ in pipeline.images_dataset(source, 100):
        pixels.append(images.numpy())
        labels.append(batch_labels.numpy())
        if sum(map(len, labels)) >= limit:
            break
    if not pixels:
        return None
    return np.concatenate(pixels)[:limit], np.concatenate(labels)[:limit], f"'{split}' images of {config.data.dataset}"
