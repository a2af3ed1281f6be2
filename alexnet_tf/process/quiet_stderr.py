"""TensorFlow's C++ start-up lines, filtered out of the process's stderr at the file-descriptor level.

TensorFlow's native code logs through absl before `absl::InitializeLog()` runs, so `TF_CPP_MIN_LOG_LEVEL` cannot
silence those lines (the oneDNN notice, "Could not find cuda drivers", the CUDA probe's cuInit failure, the
cpu_feature_guard notice): every `alexnet-tf` command printed 2 to 6 of them. `install()` puts a pipe in front of
file descriptor 2 and forwards everything else (Python tracebacks, warnings, real C++ errors) as it arrives.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+\.cc:\d+\] "  # info and warning lines of the C++ runtime
    r"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] "  # the CUDA probe's "errors" on a machine without a GPU
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.)"
)
"""A line of TensorFlow's start-up chatter; anything else passes."""


def _pump(source: int, target: int) -> None:
    """Copy `source` to `target` line by line, dropping NOISE lines; a partial line ending in a carriage return
    (a progress bar) is forwarded at once."""
    pending = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [line + b"\n" for line in lines if not NOISE.match(line.decode("utf-8", "replace"))]
        if b"\r" in pending:
            head, _, pending = pending.rpartition(b"\r")
            out.append(head + b"\r")
        if out:
            _write(target, b"".join(out))
    if pending and not NOISE.match(pending.decode("utf-8", "replace")):
        _write(target, pending)
    os.close(source)


def _write(target: int, data: bytes) -> None:
    try:
        os.write(target, data)
    except OSError:  # the terminal went away: keep draining, or writers to the pipe would block
        pass


def install() -> None:
    """Filter this process's stderr (and its children's) until exit."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), name="quiet-stderr", daemon=True)
    pump.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end: the pump drains what is left, then stops
        pump.join(timeout=5)

    atexit.register(restore)
