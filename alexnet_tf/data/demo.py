"""The built-in demo data sets: rendered shapes on cluttered, noisy backgrounds, made on first use.

`demo` has ten classes of shapes with 230 training and 50 validation images each; `demo-transfer`, for fine-tuning,
has eight other shapes with 30 and 20, and shares nothing with `demo` but the kind of image (its own classes and
seed).

Every image is drawn from its own seed (data set seed, split, class, index), so the set is the same on every machine.
The class is the shape alone: colour, size, rotation, position, background, clutter and noise are random (objects
are brighter than their background and the clutter, so the class is a silhouette to find), and
the images come in varied sizes and aspect ratios so that the resize-and-crop path is exercised. Written as JPEG
files in `folder:` layout (`<root>/<split>/<class>/<file>.jpg`) under a temporary name, then renamed.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil

import numpy as np

from alexnet_tf.process.cache import cache_root
from alexnet_tf.process.progress import progress_bar

CLASSES = ("arrow", "circle", "crescent", "cross", "heart", "hexagon", "ring", "square", "star", "triangle")
SPLITS = {"train": 230, "validation": 50}
"""Images per class in each split."""
TRANSFER_CLASSES = ("bowtie", "chevron", "diamond", "ellipse", "lshape", "pentagon", "semicircle", "tee")
TRANSFER_SPLITS = {"train": 30, "validation": 20}
TRANSFER_SEED = 2013
VERSION = 6
"""Bump when the renderer or the split sizes change, so caches of older sets are not reused."""

MAX_ROTATION = np.pi / 6
"""Objects are turned by up to +-30 degrees: enough to vary them, not so much that arrows and crosses become
a rotation-invariance problem the network cannot solve in the demo's few hundred steps."""

_SPLIT_IDS = {"train": 0, "validation": 1}


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-size shape in rotated, radius-normalised coordinates (u, v)."""
    r2 = u * u + v * v
    if name == "circle":
        return r2 < 1.0
    if name == "ring":
        return (r2 < 1.0) & (r2 > 0.55**2)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.78
    if name in ("triangle", "hexagon"):
        sides, inradius = (3, 0.5) if name == "triangle" else (6, 0.87)
        mask = np.ones_like(u, bool)
        for k in range(sides):
            angle = np.pi / 2 + 2 * np.pi * k / sides
            mask &= u * np.cos(angle) + v * np.sin(angle) < inradius
        return mask
    if name == "star":
        theta = np.arctan2(v, u)
        sector = 2 * np.pi / 5
        phase = np.abs((theta % sector) - sector / 2) / (sector / 2)  # 1 at the tips, 0 between them
        return np.sqrt(r2) < 0.42 + 0.58 * phase**1.5
    if name == "cross":
        return ((np.abs(u) < 0.28) & (np.abs(v) < 0.95)) | ((np.abs(v) < 0.28) & (np.abs(u) < 0.95))
    if name == "crescent":
        return (r2 < 1.0) & ((u - 0.45) ** 2 + v * v > 0.8**2)
    if name == "heart":
        x, y = 1.25 * u, -1.25 * v + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y**3 < 0
    if name == "diamond":
        return np.abs(u) + np.abs(v) < 0.95
    if name == "ellipse":
        return u * u + v * v / 0.3 < 1.0
    if name == "pentagon":
        mask = np.ones_like(u, bool)
        for k in range(5):
            angle = np.pi / 2 + 2 * np.pi * k / 5
            mask &= u * np.cos(angle) + v * np.sin(angle) < 0.78
        return mask
    if name == "semicircle":
        return (r2 < 1.0) & (v < 0.2)
    if name == "bowtie":
        return (np.abs(v) < 0.9 * np.abs(u)) & (np.abs(u) < 0.95)
    if name == "chevron":
        return (np.abs(u) < 0.9) & (v - 0.9 * np.abs(u) > -0.55) & (v - 0.9 * np.abs(u) < -0.05)
    if name == "lshape":
        return ((np.abs(u + 0.6) < 0.25) & (np.abs(v) < 0.9)) | ((np.abs(v - 0.65) < 0.25) & (np.abs(u) < 0.85))
    if name == "tee":
        return ((np.abs(v + 0.65) < 0.25) & (np.abs(u) < 0.9)) | ((np.abs(u) < 0.25) & (np.abs(v) < 0.9))
    if name == "arrow":
        shaft = (np.abs(v) < 0.17) & (u > -0.95) & (u < 0.15)
        head = (u >= 0.15) & (u < 0.95) & (np.abs(v) < 0.62 * (0.95 - u) / 0.8)
        return shaft | head
    raise ValueError(f"unknown demo class {name!r}")


def _colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """An RGB colour of random hue and saturation whose brightness (HSV value) lies in [low, high]."""
    hue, saturation, value = rng.uniform(0, 6), rng.uniform(0.3, 1.0), rng.uniform(low, high)
    x = 1 - abs(hue % 2 - 1)
    sector = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
    return value * (1 - saturation + saturation * np.array(sector))


def render(class_name: str, seed: tuple[int, ...], supersample: int = 2) -> np.ndarray:
    """One uint8 RGB image of `class_name`, fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    height, width = (int(s) for s in rng.integers(170, 380, 2))
    side = min(height, width)

    # Background: a gradient between two dark colours (objects are bright: the class is a silhouette to find).
    c0, c1 = _colour(rng, 20, 110), _colour(rng, 20, 110)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * direction[0] + ys * direction[1]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = c0 + (c1 - c0) * t[..., None]

    # Clutter: line segments and small blobs, each drawn only inside its bounding box.
    for _ in range(int(rng.integers(2, 6))):
        colour = _colour(rng, 40, 150)
        x0, y0 = rng.uniform(0, 1, 2) * (width, height)
        if rng.random() < 0.5:  # a line segment
            angle, half, thickness = rng.uniform(0, np.pi), side * 0.4, rng.uniform(1, 4)
            reach = half + thickness
        else:  # an ellipse
            angle, half, thickness = None, side * rng.uniform(0.03, 0.09), rng.uniform(0.5, 2)
            reach = half * 1.5
        top, bottom = int(max(0, y0 - reach)), int(min(height, y0 + reach + 1))
        left, right = int(max(0, x0 - reach)), int(min(width, x0 + reach + 1))
        if top >= bottom or left >= right:
            continue
        by, bx = ys[top:bottom, left:right] - y0, xs[top:bottom, left:right] - x0
        if angle is not None:
            across = np.abs(-bx * np.sin(angle) + by * np.cos(angle))
            mask = (across < thickness) & (np.abs(bx * np.cos(angle) + by * np.sin(angle)) < half)
        else:
            mask = bx**2 / thickness + by**2 < half**2
        image[top:bottom, left:right][mask] = colour

    # The object, inside the central square that the 256x256 crop keeps, anti-aliased by supersampling its box.
    radius = side * rng.uniform(0.25, 0.4)
    cx = width / 2 + rng.uniform(-1, 1) * (side / 2 - radius) * 0.75
    cy = height / 2 + rng.uniform(-1, 1) * (side / 2 - radius) * 0.75
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    colour = _colour(rng, 170, 255)
    tilt = rng.uniform(-1, 1, 2)
    top, bottom = int(max(0, cy - radius - 1)), int(min(height, cy + radius + 2))
    left, right = int(max(0, cx - radius - 1)), int(min(width, cx + radius + 2))
    sub_y, sub_x = np.mgrid[0 : (bottom - top) * supersample, 0 : (right - left) * supersample].astype(np.float32)
    du = ((sub_x + 0.5) / supersample + left - cx) / radius
    dv = ((sub_y + 0.5) / supersample + top - cy) / radius
    u, v = du * np.cos(angle) + dv * np.sin(angle), -du * np.sin(angle) + dv * np.cos(angle)
    mask = _shape_mask(class_name, u, v)
    fill = np.clip(colour * (1.0 + 0.25 * (u * tilt[0] + v * tilt[1]))[..., None], 0, 255)

    def pool(a):
        return a.reshape(bottom - top, supersample, right - left, supersample, -1).mean(axis=(1, 3))

    coverage = pool(mask[..., None].astype(np.float32))
    shaded = pool(fill * mask[..., None]) / np.maximum(coverage, 1e-6)
    box = image[top:bottom, left:right]
    image[top:bottom, left:right] = box * (1 - coverage) + shaded * coverage

    # Sensor noise.
    image += rng.normal(0, rng.uniform(2, 12), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _write(path: pathlib.Path, class_name: str, seed: tuple[int, ...]) -> None:
    import tensorflow as tf

    quality = int(np.random.default_rng(seed).integers(75, 96))
    path.write_bytes(tf.io.encode_jpeg(render(class_name, seed), quality=quality).numpy())


def ensure_transfer(progress: bool = True) -> pathlib.Path:
    """Make the `demo-transfer` set under `cache_root()/demo-transfer-v<VERSION>` unless it is there; return it."""
    return ensure_demo(cache_root() / f"demo-transfer-v{VERSION}", seed=TRANSFER_SEED, per_class=TRANSFER_SPLITS,
                       classes=TRANSFER_CLASSES, progress=progress)


def ensure_demo(root: str | pathlib.Path | None = None, *, seed: int = 2012, per_class: dict | None = None,
                classes: tuple[str, ...] = CLASSES, progress: bool = True) -> pathlib.Path:
    """Make the demo set under `root` (default `cache_root()/demo-v<VERSION>`) unless it is there; return root.

    Generation runs in threads (NumPy and TF's JPEG encoder release the GIL) into `<root>.tmp`, renamed when
    complete, so an interrupted run leaves no half-made set behind.
    """
    root = pathlib.Path(root) if root is not None else cache_root() / f"demo-v{VERSION}"
    if (root / "classes.txt").is_file():
        return root
    per_class = per_class or SPLITS
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = []
    for split, count in per_class.items():
        for class_id, name in enumerate(classes):
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                jobs.append((tmp / split / name / f"{name}_{index:04d}.jpg", name,
                             (seed, _SPLIT_IDS.get(split, 9), class_id, index)))
    bar = None
    if progress:
        print(f"making the {root.name.rpartition('-v')[0]} data set ({len(jobs)} images, once) in {root}")
        bar = progress_bar(len(jobs), "image")
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for done, future in enumerate(concurrent.futures.as_completed(pool.submit(_write, *job) for job in jobs)):
            future.result()
            if bar is not None and (done % 50 == 49 or done == len(jobs) - 1):
                bar.update(done + 1)
    (tmp / "classes.txt").write_text("\n".join(classes) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
