"""Progress of long work: Keras' bar on a terminal or in Jupyter; in a log (stdout redirected: CI, Slurm,
`> file`) a plain line every 30 s and one at the end. Keras 3 draws its bar with backspaces, carriage returns and
colour codes whenever Python runs on POSIX, terminal or not, 20 times a second: hours of `prepare` over ImageNet
would fill a log with megabytes of redraws nobody can read."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO


class Progress(Protocol):
    """What the package's loops call: the count so far, or a count to add."""

    def update(self, current: int) -> None: ...

    def add(self, n: int) -> None: ...


def live_display(stream: TextIO) -> bool:
    """A display that redraws a line: a terminal, or a Jupyter or PyCharm console (not terminals, but they draw
    Keras' bar; Keras' own test also counts any POSIX process)."""
    return stream.isatty() or "ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ


def progress_bar(total: int, unit: str, stream: TextIO | None = None) -> Progress:
    """Keras' bar on a live display (`stream`: default stdout), else a `LogProgress`; `unit` is singular."""
    stream = sys.stdout if stream is None else stream
    if live_display(stream):
        import keras

        return keras.utils.Progbar(total, unit_name=unit)
    return LogProgress(total, unit, stream=stream)


class LogProgress:
    """One plain line per `interval` seconds and one when `total` is reached: "1200/2800 images (43%) in 30 s,
    ~40 s left" (without a total: "1200 images in 30 s"). `start` is the count already done when it was made
    (a resumed epoch): the time left is estimated from the rate since then."""

    def __init__(self, total: int | None, unit: str, *, interval: float = 30.0, prefix: str = "", start: int = 0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.units, self.interval, self.prefix, self.clock = total, unit + "s", interval, prefix, clock
        self.stream = sys.stdout if stream is None else stream
        self.began = self.last = clock()
        self.first = self.current = start
        self.finished = False

    def _done(self, current: int) -> bool:
        return self.total is not None and current >= self.total

    def due(self, current: int) -> bool:
        """Whether `update(current)` prints a line (to compute what it adds only then)."""
        return not self.finished and (self._done(current) or self.clock() - self.last >= self.interval)

    def update(self, current: int, note: str = "") -> None:
        """The count so far; `note` ends the line ("loss: 2.3012")."""
        self.current = current
        if not self.due(current):
            return
        now, done = self.clock(), self._done(current)
        self.last, self.finished = now, done
        elapsed = now - self.began
        if self.total is None:
            line = f"{current} {self.units} in {elapsed:.0f} s"
        else:
            line = f"{current}/{self.total} {self.units} ({100 * current / max(self.total, 1):.0f}%) in {elapsed:.0f} s"
        if self.total is not None and not done and current > self.first:
            line += f", ~{elapsed * (self.total - current) / (current - self.first):.0f} s left"
        print(self.prefix + line + (f" - {note}" if note else ""), file=self.stream, flush=True)

    def add(self, n: int) -> None:
        self.update(self.current + n)
