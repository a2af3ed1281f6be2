"""The demo set: deterministic, ten classes, varied sizes, and a shape decides the class."""

import numpy as np

from alexnet_tf.data import demo


def test_rendering_is_deterministic_and_seed_dependent():
    a = demo.render("star", (1, 0, 3, 5))
    np.testing.assert_array_equal(a, demo.render("star", (1, 0, 3, 5)))
    assert not np.array_equal(a, demo.render("star", (1, 0, 3, 6)))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3


def test_sizes_and_aspect_ratios_vary():
    shapes = {demo.render("circle", (0, 0, 1, i)).shape[:2] for i in range(12)}
    ratios = [h / w for h, w in shapes]
    assert len(shapes) == 12 and min(ratios) < 0.8 and max(ratios) > 1.25


def test_shapes_differ_in_the_same_scene():
    # Same seed, different class: only the object changes, so the class really is the shape.
    images = {name: demo.render(name, (7, 0, 0, 0)).astype(int) for name in demo.CLASSES}
    for name in demo.CLASSES:
        for other in demo.CLASSES:
            if name < other:
                assert np.abs(images[name] - images[other]).mean() > 0.5, (name, other)


def test_ensure_demo_is_deterministic_and_cached(tmp_path):
    first = demo.ensure_demo(tmp_path / "a", per_class={"train": 2, "validation": 1}, progress=False)
    second = demo.ensure_demo(tmp_path / "b", per_class={"train": 2, "validation": 1}, progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert len(files) == 30
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert (first / "classes.txt").read_text().split() == list(demo.CLASSES)
    mtime = (first / files[0]).stat().st_mtime_ns
    demo.ensure_demo(tmp_path / "a", per_class={"train": 2, "validation": 1}, progress=False)
    assert (first / files[0]).stat().st_mtime_ns == mtime  # made once, then reused
    assert not (tmp_path / "a.tmp").exists()
