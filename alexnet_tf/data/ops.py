"""Small named pure-TF image ops, shared by `prepare`, the training and evaluation pipelines and the export signatures.

Each op is a factory (big_vision style): `central_crop(224)` returns a function on one image, so pipelines read as a
chain of op names and serving runs exactly the code evaluation ran. Images are HWC, RGB; uint8 until
`subtract_mean` turns them into float32. Random ops take a `seed` tensor of shape [2] and use TF's stateless random
functions, so a pipeline with a fixed seed is deterministic however many threads map it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

PAPER_SIZE = 256
"""Side of the images after the paper's offline step (shorter side to 256, central 256x256 crop)."""
CROP_SIZE = 224
"""Side of the crops the network sees."""
DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height, read from the header before decoding) `decode` accepts: no decompression bombs."""

# The widely used ImageNet statistics (RGB, pixel values in [0, 1]: fb.resnet.torch, tensorpack), for data sets
# without their own stats.npz. PCA lighting scales its offset by 255 for 0-255 images.
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))

ImageOp = Callable[[tf.Tensor], tf.Tensor]
RandomOp = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def chain(*ops: ImageOp) -> ImageOp:
    """Compose deterministic ops left to right: `chain(decode(), rescale_to_square(256))`."""

    def apply(image):
        for op in ops:
            image = op(image)
        return image

    return apply


# === Decoding ===
def _le_uint(data: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    """Little-endian unsigned integer of `length` bytes at `offset` of a scalar string."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256**i for i in range(length)], tf.int64))


def _be_uint(data: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256 ** (length - 1 - i) for i in range(length)], tf.int64))


def image_format(data: tf.Tensor) -> tf.Tensor:
    """'jpeg', 'png', 'gif', 'bmp' or '' for a scalar string of image bytes, from its magic number."""
    head = tf.strings.substr(data, 0, 4)
    return tf.case(
        [
            (tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"), lambda: tf.constant("jpeg")),
            (tf.equal(head, b"\x89PNG"), lambda: tf.constant("png")),
            (tf.equal(head, b"GIF8"), lambda: tf.constant("gif")),
            (tf.equal(tf.strings.substr(data, 0, 2), b"BM"), lambda: tf.constant("bmp")),
        ],
        default=lambda: tf.constant(""),
    )


def header_size(data: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) read from the header alone, so huge images are refused before decoding."""

    def jpeg():
        return tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)

    def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20
        return tf.stack([_be_uint(data, 20, 4), _be_uint(data, 16, 4)])

    def gif():  # logical screen: width, height as little-endian uint16 at bytes 6 and 8
        return tf.stack([_le_uint(data, 8, 2), _le_uint(data, 6, 2)])

    def bmp():  # BITMAPINFOHEADER: width, height as little-endian int32 at 18 and 22 (height < 0: top-down)
        height = _le_uint(data, 22, 4)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return tf.stack([height, _le_uint(data, 18, 4)])

    return tf.case(
        [(tf.equal(fmt, "jpeg"), jpeg), (tf.equal(fmt, "png"), png), (tf.equal(fmt, "gif"), gif)],
        default=bmp,
    )


def decode(max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageOp:
    """Image bytes (JPEG, PNG, GIF, BMP) -> uint8 [H, W, 3] RGB; grayscale and RGBA become RGB, a GIF's first frame.

    Refuses, with an InvalidArgumentError that names the problem, empty bytes, bytes that are no image, images
    whose header says more than `max_pixels` pixels, and data the decoder cannot read (truncated, corrupt).
    """

    def apply(data):
        data = tf.convert_to_tensor(data, tf.string)
        length = tf.strings.length(data)
        # Each check guards the next step: control dependencies order them inside graphs (tf.data, SavedModels).
        with tf.control_dependencies([tf.debugging.assert_positive(length, message="empty image bytes")]):
            fmt = image_format(data)
        known = tf.debugging.assert_equal(
            tf.not_equal(fmt, ""), True, message="not an image: expected JPEG, PNG, GIF or BMP bytes"
        )
        header = tf.debugging.assert_greater_equal(
            length, _min_header_length(fmt), message="truncated image: the header is incomplete"
        )
        with tf.control_dependencies([known, header]):
            size = header_size(data, fmt)
        pixels = size[0] * size[1]
        checks = [
            tf.debugging.assert_positive(pixels, message="image header gives a zero width or height"),
            tf.debugging.assert_less_equal(
                pixels, tf.constant(max_pixels, tf.int64),
                message=f"image too large: more than the limit of {max_pixels} pixels (width x height)",
            ),
        ]
        with tf.control_dependencies(checks):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    return apply


def _min_header_length(fmt: tf.Tensor) -> tf.Tensor:
    """Bytes `header_size` reads for a format (JPEG's own parser checks itself)."""
    return tf.case(
        [(tf.equal(fmt, "png"), lambda: tf.constant(24)), (tf.equal(fmt, "gif"), lambda: tf.constant(10)),
         (tf.equal(fmt, "bmp"), lambda: tf.constant(26))],
        default=lambda: tf.constant(4),
    )


# === Resizing (the paper's offline step; also the export signatures' first step) ===
def resize_shorter(size: int = PAPER_SIZE) -> ImageOp:
    """Rescale so that the shorter side is `size` (bilinear, antialiased when shrinking); uint8 in and out."""

    def apply(image):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
        resized = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return apply


def central_crop(size: int) -> ImageOp:
    """The central `size` x `size` window of an image [H, W, C] or a batch [B, H, W, C] (at least that large)."""

    def apply(image):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        top, left = (shape[-3] - size) // 2, (shape[-2] - size) // 2
        crop = image[..., top : top + size, left : left + size, :]
        crop.set_shape(image.shape[:-3].concatenate([size, size, image.shape[-1]]))
        return crop

    return apply


def rescale_to_square(size: int = PAPER_SIZE) -> ImageOp:
    """Shorter side to `size`, then the central `size` x `size` crop: the paper's preprocessing of a raw image.

    The one function `prepare` and the export signatures both use, so serving sees what training saw.
    """
    return chain(resize_shorter(size), central_crop(size))


# === Training augmentation and evaluation crops ===
def subtract_mean(mean: np.ndarray | Sequence[float]) -> ImageOp:
    """image - mean, as float32; `mean` is the training set's mean image (H, W, 3) or an RGB triple (subtracted
    with `add_per_channel`, not TensorFlow's slow [3]-vector broadcast)."""
    mean = np.asarray(mean, np.float32)
    negated_triple = tf.constant(-mean) if mean.ndim == 1 else None
    mean = tf.constant(mean)

    def apply(image):
        image = tf.cast(image, tf.float32)
        return add_per_channel(image, negated_triple) if negated_triple is not None else image - mean

    return apply


def random_crop(size: int = CROP_SIZE) -> RandomOp:
    """A uniformly placed `size` x `size` window (paper: random 224 patches of the 256 images)."""

    def apply(image, seed):
        image = tf.convert_to_tensor(image)
        return tf.image.stateless_random_crop(image, [size, size, image.shape[-1] or 3], seed=seed)

    return apply


def random_window(image_size: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """[top, left] of a uniformly placed `size` window inside an image of `image_size` = [height, width]."""
    limit = tf.cast(image_size[:2], tf.int32) - size + 1
    return tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32) % limit


def flip_decision(seed: tf.Tensor) -> tf.Tensor:
    """True with probability 1/2: whether `flip_lr` mirrors the image for this seed."""
    return tf.random.stateless_uniform([], seed) < 0.5


def mirror_if(image: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """The image mirrored left-right when `flip` is true, else unchanged."""
    image = tf.convert_to_tensor(image)
    return tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)


def flip_lr() -> RandomOp:
    """Mirror left-right with probability 1/2."""

    def apply(image, seed):
        return mirror_if(image, flip_decision(seed))

    return apply


def lighting_offset(
    alpha_std: float = 0.1,
    eigval: Sequence[float] = IMAGENET_EIGVAL,
    eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
    pixel_scale: float = 255.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """seed -> the RGB offset P [a1 l1, a2 l2, a3 l3]^T, a_i ~ N(0, alpha_std) drawn for that seed (paper, 4.1).

    `eigvec` holds the eigenvectors P as columns and `eigval` the eigenvalues l of the 3x3 covariance of RGB pixel
    values scaled to [0, 1]; the offset is multiplied by `pixel_scale` for 0-255 images.
    """
    eigval = tf.constant(np.asarray(eigval, np.float32))
    eigvec = tf.constant(np.asarray(eigvec, np.float32))

    def draw(seed):
        alpha = tf.random.stateless_normal([3], seed, stddev=alpha_std)
        return pixel_scale * tf.linalg.matvec(eigvec, alpha * eigval)

    return draw


def pca_lighting(
    alpha_std: float = 0.1,
    eigval: Sequence[float] = IMAGENET_EIGVAL,
    eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
    pixel_scale: float = 255.0,
) -> RandomOp:
    """Add the `lighting_offset` drawn for `seed` to every pixel: the paper's PCA colour augmentation."""
    offset = lighting_offset(alpha_std, eigval, eigvec, pixel_scale)

    def apply(image, seed):
        return add_per_channel(tf.cast(image, tf.float32), offset(seed))

    return apply


def add_per_channel(image: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """image + offset[c] at every pixel, for an image [..., H, W, C] and an offset [C].

    Computed as rows [..., H, W*C] plus the offset tiled to one row: TensorFlow's kernels for broadcasting a
    [C] vector (`+`, `tf.nn.bias_add`) were measured 3-4x slower on 224x224x3 images than this row broadcast.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    width, channels = shape[-2], image.shape[-1]
    rows = tf.reshape(image, tf.concat([shape[:-2], [width * channels]], axis=0))
    summed = tf.reshape(rows + tf.tile(tf.cast(offset, image.dtype), [width]), shape)
    summed.set_shape(image.shape)
    return summed


def ten_crops(size: int = CROP_SIZE) -> ImageOp:
    """The four corner crops and the centre crop, then the same five mirrored (paper, section 4.1):
    [10, size, size, C] for one image [H, W, C], [B, 10, size, size, C] for a batch."""

    def apply(image):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        height, width = shape[-3], shape[-2]
        corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
                   ((height - size) // 2, (width - size) // 2)]
        crops = tf.stack([image[..., top : top + size, left : left + size, :] for top, left in corners], axis=-4)
        crops = tf.concat([crops, tf.reverse(crops, axis=[-2])], axis=-4)
        crops.set_shape(image.shape[:-3].concatenate([10, size, size, image.shape[-1]]))
        return crops

    return apply


def error_reason(error: Exception) -> str:
    """A one-line reason from a TensorFlow decoding error: our assertion's message, or the op's own message,
    without the graph-execution preamble, node names and Python stack."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    asserted = re.search(r"assertion failed: \[([^\]]*)\]", text)
    if asserted:
        return asserted.group(1).strip().rstrip(".")
    noise = ("Graph execution error", "Detected at node", "Stack trace", "File ", "[[", "Traceback")
    for line in text.splitlines():
        if line.strip() and not line[0].isspace() and not line.startswith(noise):
            return re.sub(r"\s*(\[\[.*|\[Op:.*)$", "", line.strip())
    return type(error).__name__
