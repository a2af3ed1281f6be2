"""The paper's qualitative evaluation (section 6.1) for any run: Figure 3 (conv1 kernels by tower), Figure 4 (top-5
predictions; nearest neighbours by fc7 features), and the training curves, as PNG files.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_tf.classifier import ImageClassifier  # noqa: E402
from alexnet_tf.data import ops, pipeline  # noqa: E402
from alexnet_tf.data.sources import RecordsSource  # noqa: E402


# === Figure 3 ===
def conv1_kernels(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """Tower A's and tower B's conv1 kernels as (48, 11, 11, 3) arrays."""
    return tuple(np.moveaxis(np.asarray(model.get_layer(f"conv1_{t}").kernel), -1, 0) for t in "ab")


def normalise_for_display(kernel: np.ndarray) -> np.ndarray:
    """Stretch one kernel's values to [0, 1] (its own min and max), as Figure 3 shows them."""
    low, high = kernel.min(), kernel.max()
    return (kernel - low) / (high - low) if high > low else np.full_like(kernel, 0.5)


def colour_specificity(kernels: np.ndarray) -> float:
    """Mean share of each kernel's energy that lies in colour differences rather than brightness: 0 for grey
    kernels (R = G = B at every pixel), larger for colour-specific ones. kernels: (n, h, w, 3)."""
    kernels = kernels - kernels.mean(axis=(1, 2, 3), keepdims=True)
    grey = kernels.mean(axis=-1, keepdims=True)
    chroma = ((kernels - grey) ** 2).sum(axis=(1, 2, 3))
    total = (kernels**2).sum(axis=(1, 2, 3))
    return float(np.mean(chroma / np.maximum(total, 1e-12)))


def kernel_grid(kernels: np.ndarray, columns: int = 16, gap: int = 1) -> np.ndarray:
    """Tile (n, h, w, 3) kernels, each normalised for display, into one image with `gap`-pixel white lines."""
    n, h, w, _ = kernels.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, 3))
    for i, kernel in enumerate(kernels):
        r, c = divmod(i, columns)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = normalise_for_display(kernel)
    return grid


def figure3(model: keras.Model, path: pathlib.Path) -> dict[str, float]:
    """The 96 conv1 kernels, tower A's 48 on top and tower B's below; returns each tower's colour specificity."""
    tower_a, tower_b = conv1_kernels(model)
    scores = {"tower_a": colour_specificity(tower_a), "tower_b": colour_specificity(tower_b)}
    grids = [kernel_grid(tower_a), kernel_grid(tower_b)]
    figure, axes = plt.subplots(2, 1, figsize=(8, 3.6))
    for ax, grid, name, key in zip(axes, grids, ("A", "B"), scores):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(f"tower {name}: 48 conv1 kernels (11x11x3), colour specificity {scores[key]:.2f}", fontsize=9)
        ax.axis("off")
    figure.suptitle("Figure 3: conv1 kernels by tower", fontsize=10)
    save_figure(figure, path)
    return scores


# === Figure 4 ===
@dataclasses.dataclass
class Images:
    """Decoded 256x256 images with labels and file names, in file order."""

    pixels: np.ndarray  # uint8 (n, 256, 256, 3)
    labels: np.ndarray
    names: list[str]


def load_images(source: RecordsSource, limit: int | None = None, batch_size: int = 64) -> Images:
    pixels, labels, names = [], [], []
    count = 0
    for batch, label, name in pipeline.images_dataset(source, batch_size):
        pixels.append(batch.numpy())
        labels.append(label.numpy())
        names += [n.decode() for n in name.numpy()]
        count += len(label)
        if limit is not None and count >= limit:
            break
    if not pixels:
        raise ValueError(f"{source.uri}: the '{source.split}' split has no readable images")
    return Images(np.concatenate(pixels)[:limit], np.concatenate(labels)[:limit], names[:limit])


def nearest_neighbours(queries: np.ndarray, database: np.ndarray, k: int = 6, chunk: int = 1024) -> np.ndarray:
    """Indices (len(queries), k) of the k database rows nearest to each query in Euclidean distance, nearest first.

    Exact, and memory-bounded: distances are computed chunk by chunk as |q|^2 - 2 q.d + |d|^2 (one matrix product
    per chunk) and only the running k best are kept.
    """
    k = min(k, len(database))
    queries, database = np.asarray(queries, np.float64), np.asarray(database, np.float64)
    q_norm = (queries**2).sum(axis=1, keepdims=True)
    best_d = np.full((len(queries), 0), np.inf)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(database), chunk):
        block = database[start : start + chunk]
        distances = q_norm - 2.0 * queries @ block.T + (block**2).sum(axis=1)
        indices = np.broadcast_to(np.arange(start, start + len(block)), distances.shape)
        merged_d = np.concatenate([best_d, distances], axis=1)
        merged_i = np.concatenate([best_i, indices], axis=1)
        keep = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(merged_d, keep, axis=1)
        best_i = np.take_along_axis(merged_i, keep, axis=1)
    return best_i


def figure4_predictions(classifier: ImageClassifier, images: Images, path: pathlib.Path, count: int = 8) -> None:
    """Eight validation images, each with its top-5 labels as bars; the true label under it, its bar red."""
    count = min(count, len(images.labels))
    probabilities = classifier.predict(images.pixels[:count])
    classes = classifier.labels
    figure, axes = plt.subplots(2, count, figsize=(2.0 * count, 4.6), gridspec_kw={"height_ratios": [3, 2]})
    axes = np.asarray(axes).reshape(2, count)
    for i in range(count):
        truth = int(images.labels[i])
        axes[0, i].imshow(ops.central_crop(classifier.image_size)(images.pixels[i]).numpy())
        axes[0, i].set_xticks([])
        axes[0, i].set_yticks([])
        axes[0, i].set_xlabel(classes[truth], fontsize=8)
        top = np.argsort(-probabilities[i])[:5]
        colours = ["red" if c == truth else "tab:blue" for c in top]
        axes[1, i].barh(range(len(top))[::-1], probabilities[i][top], color=colours)
        axes[1, i].set_yticks(range(len(top))[::-1], [classes[c] for c in top], fontsize=7)
        axes[1, i].set_xlim(0, 1)
        axes[1, i].tick_params(axis="x", labelsize=6)
    figure.suptitle("Figure 4 (left): top-5 predictions on validation images (true label in red)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def figure4_neighbours(queries: Images, query_features: np.ndarray, database: Images, database_features: np.ndarray,
                       path: pathlib.Path, count: int = 5, k: int = 6, size: int = ops.CROP_SIZE) -> None:
    """Five validation images, each followed by the six training images nearest in fc7 feature space (shown as
    the `size` centre crops the network saw)."""
    count = min(count, len(queries.labels))
    neighbours = nearest_neighbours(query_features[:count], database_features, k)
    k = neighbours.shape[1]
    figure, axes = plt.subplots(count, k + 1, figsize=(1.3 * (k + 1), 1.35 * count))
    axes = np.asarray(axes).reshape(count, k + 1)
    crop = ops.central_crop(size)
    for row in range(count):
        axes[row, 0].imshow(crop(queries.pixels[row]).numpy())
        for column, index in enumerate(neighbours[row], start=1):
            axes[row, column].imshow(crop(database.pixels[index]).numpy())
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("query", fontsize=8)
    for column in range(1, k + 1):
        axes[0, column].set_title(f"#{column}", fontsize=8)
    figure.suptitle("Figure 4 (right): nearest training images by fc7 features", fontsize=10)
    save_figure(figure, path)


# === Training curves ===
def read_history(path: pathlib.Path) -> dict[str, list[float]]:
    """Keras' CSVLogger history as columns; "NA" (an epoch without validation) and blanks become NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no epochs")
    missing = ("", "NA", None)
    return {key: [float(row[key]) if row[key] not in missing else math.nan for row in rows] for key in rows[0]}


def training_curves(history: dict[str, list[float]], path: pathlib.Path) -> None:
    """Loss, top-1 and top-5 error per epoch for training and validation, learning-rate drops as dashed lines."""
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history["loss"])))]
    rates = history.get("learning_rate", [])
    drops = [epochs[i] for i in range(1, len(rates)) if rates[i] < rates[i - 1] * 0.999]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, metric, title in zip(axes, ("loss", "top1_error", "top5_error"), ("loss", "top-1 error", "top-5 error")):
        ax.plot(epochs, history[metric], "o-", label="training", markersize=3)
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation", markersize=3)
        for drop in drops:
            ax.axvline(drop - 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    if drops:
        axes[0].text(drops[0] - 0.5, axes[0].get_ylim()[1], " lr / 10", fontsize=7, va="top", color="grey")
    figure.tight_layout()
    save_figure(figure, path)


def save_figure(figure, path: pathlib.Path, dpi: int = 100) -> None:
    """Write a PNG under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=dpi)
    plt.close(figure)
    tmp.replace(path)


def draw_all(classifier: ImageClassifier, out: pathlib.Path, *, train: RecordsSource | None,
             validation: RecordsSource | None, history_path: pathlib.Path, say: Callable[[str], None] = print,
             database_limit: int = 5000) -> dict[str, pathlib.Path]:
    """Every figure that can be drawn; a missing split or history gets a message and the others still appear."""
    written = {}
    scores = figure3(classifier.model, out / "figure3_conv1_kernels.png")
    written["figure3"] = out / "figure3_conv1_kernels.png"
    say(f"conv1 colour specificity: tower A {scores['tower_a']:.3f}, tower B {scores['tower_b']:.3f} "
        "(the paper saw one tower colour-agnostic, the other colour-specific)")
    if validation is None:
        say("no validation split: skipping Figure 4 (it shows validation images)")
    else:
        queries = load_images(validation, limit=8)
        figure4_predictions(classifier, queries, out / "figure4_top5.png")
        written["figure4_top5"] = out / "figure4_top5.png"
        if train is None:
            say("no training split: skipping Figure 4 (right), whose neighbours are training images")
        else:
            database = load_images(train, limit=database_limit)
            database_features = classifier.features(database.pixels)
            figure4_neighbours(queries, classifier.features(queries.pixels), database, database_features,
                               out / "figure4_neighbours.png", size=classifier.image_size)
            written["figure4_neighbours"] = out / "figure4_neighbours.png"
    if not history_path.is_file():
        say(f"no training history at {history_path}: skipping the training curves")
    else:
        training_curves(read_history(history_path), out / "training_curves.png")
        written["training_curves"] = out / "training_curves.png"
    return written
