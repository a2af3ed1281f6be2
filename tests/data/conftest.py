"""Fixtures for the data tests: a tiny demo set and small folders of awkward images, all made on the spot."""

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_tf.data import demo


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels)
    (picture.convert(mode) if mode else picture).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The demo renderer at 6 training and 2 validation images per class."""
    return demo.ensure_demo(tmp_path_factory.mktemp("demo") / "demo", per_class={"train": 6, "validation": 2},
                            progress=False)


@pytest.fixture
def awkward_folder(tmp_path):
    """Two classes of good images plus every kind of trouble `prepare` must survive."""
    rng = np.random.default_rng(0)
    root = tmp_path / "awkward"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (int(rng.integers(60, 120)), int(rng.integers(60, 120)), 3), dtype=np.uint8)
            (root / name / f"{name}{i}.jpg").write_bytes(encode(pixels))
    pixels = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    (root / "cats" / "cmyk.jpg").write_bytes(encode(pixels, "JPEG", "CMYK"))
    (root / "cats" / "gray.jpg").write_bytes(encode(pixels, "JPEG", "L"))
    (root / "dogs" / "actually_png.jpg").write_bytes(encode(pixels, "PNG"))
    (root / "dogs" / "tiny.png").write_bytes(encode(pixels[:5, :5], "PNG"))
    (root / "dogs" / "garbage.jpg").write_bytes(b"this is not an image at all")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "cut.jpg").write_bytes(encode(pixels)[:300])  # header only: nothing to recover
    return root
