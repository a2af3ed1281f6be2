"""Image ops against NumPy, each run eagerly and inside tf.data.Dataset.map (the two differ more than you'd think)."""

import io

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import ops


def run_both(fn, *args):
    """fn(*args) eagerly and through Dataset.map; assert they agree and return the eager result."""
    eager = fn(*args)
    mapped = next(iter(tf.data.Dataset.from_tensors(args).map(lambda *a: fn(*a))))
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(mapped))
    return np.asarray(eager)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)


def test_central_crop_is_the_middle_slice(image):
    np.testing.assert_array_equal(run_both(ops.central_crop(224), image), image[16:240, 16:240])


def test_random_crop_is_a_slice_of_the_image_and_moves_with_the_seed(image):
    seen = set()
    for s in range(6):
        crop = run_both(ops.random_crop(224), image, tf.constant([s, 7], tf.int64))
        matches = [(t, x) for t in range(33) for x in range(33)
                   if np.array_equal(image[t : t + 224, x : x + 224], crop)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1


def test_flip_is_a_mirror_or_identity_and_both_happen(image):
    outcomes = set()
    for s in range(12):
        out = run_both(ops.flip_lr(), image, tf.constant([s, 3], tf.int64))
        if np.array_equal(out, image):
            outcomes.add("same")
        else:
            np.testing.assert_array_equal(out, image[:, ::-1])
            outcomes.add("mirrored")
    assert outcomes == {"same", "mirrored"}


def test_ten_crops_are_corners_centre_and_their_mirrors(image):
    crops = run_both(ops.ten_crops(224), image)
    expected = [image[:224, :224], image[:224, 32:], image[32:, :224], image[32:, 32:], image[16:240, 16:240]]
    expected += [e[:, ::-1] for e in expected]
    np.testing.assert_array_equal(crops, np.stack(expected))


def test_crops_work_on_batches_too(image):
    batch = np.stack([image, image[::-1]])
    np.testing.assert_array_equal(run_both(ops.central_crop(224), batch), batch[:, 16:240, 16:240])
    crops = run_both(ops.ten_crops(224), batch)
    assert crops.shape == (2, 10, 224, 224, 3)
    np.testing.assert_array_equal(crops[1], run_both(ops.ten_crops(224), image[::-1]))


def test_subtract_mean_image_and_triple(image):
    mean = np.random.default_rng(1).uniform(0, 255, (256, 256, 3)).astype(np.float32)
    np.testing.assert_allclose(run_both(ops.subtract_mean(mean), image), image.astype(np.float32) - mean)
    triple = (123.0, 117.0, 104.0)
    np.testing.assert_allclose(run_both(ops.subtract_mean(triple), image), image - np.array(triple, np.float32))


def test_pca_lighting_adds_p_times_alpha_lambda():
    eigval = np.array([0.3, 0.05, 0.01])
    eigvec = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    image = np.random.default_rng(3).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    seed = tf.constant([5, 9], tf.int64)
    out = run_both(ops.pca_lighting(0.1, eigval, eigvec), image, seed)
    alpha = tf.random.stateless_normal([3], seed, stddev=0.1).numpy()
    expected = 255.0 * eigvec @ (alpha * eigval)
    np.testing.assert_allclose(out, image + expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3), (224, 224, 3)])
def test_add_per_channel_is_numpy_broadcasting(shape):
    rng = np.random.default_rng(4)
    image, offset = rng.normal(size=shape).astype(np.float32), rng.normal(size=3).astype(np.float32)
    out = ops.add_per_channel(tf.constant(image), tf.constant(offset))
    assert out.shape == shape
    np.testing.assert_allclose(out, image + offset, rtol=1e-6)


def test_pca_lighting_covariance_over_many_draws():
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array(ops.IMAGENET_EIGVEC)
    lighting = ops.pca_lighting(0.1, eigval, eigvec, pixel_scale=1.0)
    seeds = tf.random.experimental.stateless_split(tf.constant([1, 2], tf.int64), 20000)
    offsets = tf.vectorized_map(lambda s: lighting(tf.zeros((1, 1, 3)), s)[0, 0], seeds).numpy()
    expected = 0.01 * eigvec @ np.diag(eigval**2) @ eigvec.T
    np.testing.assert_allclose(np.cov(offsets.T), expected, atol=0.05 * expected.max())
    np.testing.assert_allclose(offsets.mean(axis=0), 0.0, atol=0.01 * np.sqrt(expected.max()) * 5)


def encode(pixels, fmt, mode=None):
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(pixels)
    picture = picture.convert(mode) if mode else picture
    picture.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, mode", [("JPEG", None), ("PNG", None), ("PNG", "RGBA"), ("GIF", None), ("BMP", None),
                                       ("JPEG", "L"), ("JPEG", "CMYK")])
def test_decode_gives_rgb_for_every_format(fmt, mode):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    decoded = run_both(ops.decode(), tf.constant(encode(pixels, fmt, mode)))
    assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8
    if fmt in ("PNG", "BMP") and mode is None:
        np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty image bytes"),
    (b"definitely not an image", "not an image"),
    (b"\x89PNG\r\n", "truncated image: the header is incomplete"),
])
def test_decode_names_the_problem(data, reason):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        ops.decode()(tf.constant(data))
    assert reason in ops.error_reason(error.value)
    dataset = tf.data.Dataset.from_tensors(tf.constant(data)).map(ops.decode())
    with pytest.raises(tf.errors.InvalidArgumentError, match=reason):
        next(iter(dataset))


def test_decode_refuses_huge_images_from_the_header_alone():
    # A PNG header claiming 100000 x 100000 pixels followed by nothing: refused before any decoding.
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        ops.decode(max_pixels=1_000_000)(tf.constant(header))
    pixels = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        ops.decode(max_pixels=2999)(tf.constant(encode(pixels, "JPEG")))
    assert ops.decode(max_pixels=3000)(tf.constant(encode(pixels, "JPEG"))).shape == (50, 60, 3)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "JPEG"])
def test_header_size_reads_height_and_width(fmt):
    data = tf.constant(encode(np.zeros((37, 91, 3), np.uint8), fmt))
    assert list(run_both(lambda d: ops.header_size(d, ops.image_format(d)), data)) == [37, 91]


def test_rescale_to_square_shorter_side_then_centre():
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 140:160] = 255  # a bright bar in the middle survives the centre crop
    out = run_both(ops.rescale_to_square(64), wide)
    assert out.shape == (64, 64, 3)
    assert out[:, 32].min() > 200 and out[:, 0].max() < 10
    tall = np.full((500, 200, 3), 77, np.uint8)
    out = run_both(ops.resize_shorter(256), tall)
    assert out.shape == (640, 256, 3) and np.all(out == 77)


def test_chain_composes_left_to_right():
    fn = ops.chain(lambda x: x + 1, lambda x: x * 10)
    assert int(fn(tf.constant(1))) == 20
