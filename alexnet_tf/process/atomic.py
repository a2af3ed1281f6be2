"""Files written under a temporary name in the same directory, then renamed: readers see the old file or the
whole new one, never a half-written one."""

from __future__ import annotations

import os
import pathlib

import numpy as np


def _temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: str | pathlib.Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    path = pathlib.Path(path)
    tmp = _temporary(path)
    tmp.write_text(text)
    tmp.replace(path)


def save_npz(path: str | pathlib.Path, **arrays) -> None:
    """np.savez(path, **arrays), atomically (through a file object, so NumPy adds no suffix)."""
    path = pathlib.Path(path)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
