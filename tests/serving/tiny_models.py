"""Small SavedModels in TF Serving's layout (BASE/<version>/saved_model.pb), written with TensorFlow itself, for the
tests of what the server does with versions, labels and models: each answers with its own version number, so a
test sees which version served it, and loads in well under a second."""

from __future__ import annotations

import os
import pathlib
import shutil

import tensorflow as tf


def write_version(base: pathlib.Path, version: int, *, publish: bool = True, weight_dtype=tf.float32
                  ) -> pathlib.Path:
    """BASE/VERSION: serving_default takes x (float32 [n]) and returns y = x * version * w (w a variable of
    `weight_dtype` holding 1) and version (int64 [n]). Written under a temporary name and renamed, as
    `alexnet-tf export` publishes a version."""
    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(1.0, dtype=weight_dtype)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * float(version) * tf.cast(self.w, tf.float32),
                    "version": tf.fill(tf.shape(x, out_type=tf.int64)[:1], tf.constant(version, tf.int64))}

    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".incoming-{version}"
    module = Tiny()
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
    if not publish:
        return staging
    final = base / str(version)
    os.rename(staging, final)
    return final


def write_broken_version(base: pathlib.Path, version: int) -> pathlib.Path:
    """BASE/VERSION whose saved_model.pb is not a SavedModel: loading it fails every time."""
    final = base / str(version)
    staging = base / f".incoming-{version}"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(staging, final)
    return final


def copy_versions(source: pathlib.Path, base: pathlib.Path, versions) -> None:
    """Copies of version directories (a SavedModel does not depend on its directory's name)."""
    base.mkdir(parents=True, exist_ok=True)
    for version in versions:
        shutil.copytree(source, base / str(version))
