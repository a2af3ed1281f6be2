"""A write that fails for want of space or permission (a full disk, a quota, a read-only mount) becomes one
`WriteError` naming the path, the bytes needed and free: the commands print it as one line and exit with status 2.
The temporaries of that write are removed and nothing appears under a final name (each write site writes under a
temporary name first), so the previous file, backup or version stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import sys
import traceback
from collections.abc import Iterable, Iterator

# errno -> the reason printed; TensorFlow's C++ writers only keep strerror()'s text in their messages.
REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
_TEXTS = {os.strerror(code): reason for code, reason in REASONS.items()}


class WriteError(OSError):
    """A write that could not be done: `str()` is the one line to print."""

    def __init__(self, path: str | os.PathLike, reason: str, needed: int | None = None, note: str = ""):
        free = free_bytes(path)
        sizes = [f"{format_bytes(needed)} needed" if needed else "", f"{format_bytes(free)} free" if free is not None
                 else ""]
        sizes_text = ", ".join(s for s in sizes if s)
        message = f"cannot write {path}: {reason}" + (f" ({sizes_text})" if sizes_text else "") + (
            f"; {note}" if note else "")
        super().__init__(message)
        self.path, self.reason, self.needed, self.free, self.note = pathlib.Path(path), reason, needed, free, note

    def __str__(self) -> str:
        return self.args[0]


def reason_of(error: BaseException) -> str | None:
    """Why `error` is a failed write (full disk, quota, read-only, permission), or None when it is something else.
    OSErrors by errno; TensorFlow's errors and h5py's by the system's text for those errnos in their message."""
    if isinstance(error, WriteError):
        return error.reason
    if isinstance(error, OSError) and error.errno in REASONS:
        return REASONS[error.errno]
    text = str(error)
    return next((reason for system_text, reason in _TEXTS.items() if system_text in text), None)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes available to this user on the file system that holds `path` (its nearest existing ancestor)."""
    path = pathlib.Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def format_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def variable_bytes(variables: Iterable) -> int:
    """The bytes of these variables' values: what a weights file of them holds, give or take its index."""
    total = 0
    for variable in variables:
        count = 1
        for dim in variable.shape:
            count *= int(dim)
        name = str(getattr(variable.dtype, "name", variable.dtype))
        total += count * (8 if "64" in name else 2 if "16" in name else 1 if "8" in name else 4)
    return total


def remove(path: str | os.PathLike) -> None:
    """Remove a file or a directory tree, if it is there."""
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _h5py_destructor_noise(text: str) -> bool:
    return "decrement id ref count" in text or "h5py._objects.ObjectID.__dealloc__" in text


def _quiet_h5py_destructors() -> None:
    """h5py's objects, left half-closed by a failed write, report it from their destructors whenever they go (the
    failed write's frames live on in tracebacks), through sys.excepthook and sys.unraisablehook: after a failed
    write those messages only are dropped for the rest of the process, so the failure stays one line."""
    if getattr(sys.unraisablehook, "drops_h5py_noise", False):
        return
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(kind, value, traceback):
        if not _h5py_destructor_noise(str(value)):
            excepthook(kind, value, traceback)

    def on_unraisable(unraisable):
        if not (_h5py_destructor_noise(str(unraisable.exc_value)) or _h5py_destructor_noise(str(unraisable.object))):
            unraisablehook(unraisable)

    on_unraisable.drops_h5py_noise = True
    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def _close_h5py_files(trace) -> None:
    """Close the h5py files the failed write's frames still hold open (Keras' weights store, whose close was never
    reached): left to their destructors, HDF5 retries the flush at interpreter exit and crashes (measured: SIGSEGV
    on a full tmpfs). Nothing happens when h5py was not in use."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return
    for frame, _ in traceback.walk_tb(trace):
        for value in list(frame.f_locals.values()):
            for candidate in (value, getattr(value, "h5_file", None)):
                if isinstance(candidate, h5py.File):
                    with contextlib.suppress(Exception):
                        candidate.close()


@contextlib.contextmanager
def guard(path: str | os.PathLike, *, needed: int | None = None, temporaries: Iterable = (),
          note: str = "") -> Iterator[None]:
    """Run a write to `path`: if it fails for want of space or permission, remove `temporaries` and raise
    `WriteError` (with `note` appended, e.g. what was kept); any other error passes through unchanged."""
    failed: tuple[str, WriteError | None] | None = None
    try:
        yield
    except Exception as error:
        reason = reason_of(error)
        if reason is None:
            raise
        _quiet_h5py_destructors()
        # Let the failed write's objects go now (h5py's open file among them): kept alive by the traceback until
        # interpreter exit, h5py closes that file then, fails again, and crashes the process (measured: SIGSEGV).
        if not isinstance(error, WriteError):
            _close_h5py_files(error.__traceback__)
            traceback.clear_frames(error.__traceback__)
            error.__traceback__ = None
        failed = (reason, error if isinstance(error, WriteError) else None)
    if failed is None:
        return
    for temporary in temporaries:
        remove(temporary)
    reason, inner = failed
    if inner is not None:  # from an inner write: keep its path, add what this level knows
        if not note:
            raise inner
        raise WriteError(inner.path, inner.reason, inner.needed or needed, note)
    raise WriteError(path, reason, needed, note)
