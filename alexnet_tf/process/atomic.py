"""Files written under a temporary name in the same directory, then renamed: readers see the old file or the
whole new one, never a half-written one."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np

from alexnet_tf.process import disk


def _temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: str | pathlib.Path, text: str) -> None:
    """Write `text` to `path` atomically (`disk.WriteError` when the disk is full or read-only)."""
    path = pathlib.Path(path)
    tmp = _temporary(path)
    with disk.guard(path, needed=len(text.encode()), temporaries=[tmp]):
        tmp.write_text(text)
        tmp.replace(path)


def save_npz(path: str | pathlib.Path, **arrays) -> None:
    """np.savez(path, **arrays), atomically (through a file object, so NumPy adds no suffix)."""
    path = pathlib.Path(path)
    tmp = _temporary(path)
    with disk.guard(path, needed=sum(np.asarray(a).nbytes for a in arrays.values()), temporaries=[tmp]):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)


def replace_directory(new: str | pathlib.Path, final: str | pathlib.Path, retired_name: str | None = None) -> None:
    """Move the finished directory `new` to `final` (same file system), replacing what was there: the old one is
    renamed away first (to `retired_name` beside it, default `.NAME.retired`) and deleted once the new one is in
    place, so `final` is the old directory or the whole new one, never a mixture."""
    new, final = pathlib.Path(new), pathlib.Path(final)
    if not final.exists():
        new.rename(final)
        return
    retired = final.with_name(retired_name or f".{final.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    final.rename(retired)
    new.rename(final)
    shutil.rmtree(retired, ignore_errors=True)
