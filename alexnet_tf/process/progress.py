"""Progress of long work: Keras' bar on a terminal; in a log (stdout redirected: CI, Slurm, `> file`) a plain line
every 30 s and one at the end. Keras 3 draws its bar with backspaces, carriage returns and colour codes whenever
Python runs on POSIX, terminal or not, 20 times a second: hours of `prepare` over ImageNet would fill a log with
megabytes of redraws nobody can read."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO


class Progress(Protocol):
    """What the package's loops call: the count so far, or a count to add."""

    def update(self, current: int) -> None: ...

    def add(self, n: int) -> None: ...


def progress_bar(total: int, unit: str, stream: TextIO | None = None) -> Progress:
    """Keras' bar when `stream` (default stdout) is a terminal, else a `LogProgress`; `unit` is singular ("image")."""
    stream = sys.stdout if stream is None else stream
    if stream.isatty():
        import keras

        return keras.utils.Progbar(total, unit_name=unit)
    return LogProgress(total, unit, stream=stream)


class LogProgress:
    """One plain line per `interval` seconds and one when `total` is reached: "1200/2800 images (43%) in 30 s,
    ~40 s left"."""

    def __init__(self, total: int, unit: str, *, interval: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.units, self.interval, self.clock = total, unit + "s", interval, clock
        self.stream = sys.stdout if stream is None else stream
        self.start = self.last = clock()
        self.current, self.finished = 0, False

    def update(self, current: int) -> None:
        self.current = current
        now = self.clock()
        done = current >= self.total
        if self.finished or not (done or now - self.last >= self.interval):
            return
        self.last, self.finished = now, done
        elapsed = now - self.start
        line = f"{current}/{self.total} {self.units} ({100 * current / max(self.total, 1):.0f}%) in {elapsed:.0f} s"
        if not done and current > 0:
            line += f", ~{elapsed * (self.total - current) / current:.0f} s left"
        print(line, file=self.stream, flush=True)

    def add(self, n: int) -> None:
        self.update(self.current + n)
