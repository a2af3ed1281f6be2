"""Where alexnet-tf keeps what it makes once per machine: demo sets, prepared data, path timings, built kernels."""

from __future__ import annotations

import os
import pathlib


def cache_root() -> pathlib.Path:
    """`$ALEXNET_TF_CACHE`, else `~/.cache/alexnet_tf`."""
    return pathlib.Path(os.environ.get("ALEXNET_TF_CACHE", pathlib.Path.home() / ".cache" / "alexnet_tf"))
