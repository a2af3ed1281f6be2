"""Progress: Keras' bar on a terminal; in a log, a plain line every 30 s and one at the end, nothing else."""

import io
import sys
import types

import keras

from alexnet_tf.process.progress import LogProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_interval_and_one_at_the_end():
    clock, log = Clock(), io.StringIO()
    progress = LogProgress(2800, "image", stream=log, clock=clock)
    for seconds, count in ((10, 400), (29, 1100), (30, 1200), (45, 1600), (61, 2000)):
        clock.now = 100.0 + seconds
        progress.update(count)
    clock.now = 170.0
    progress.add(800)  # 2000 + 800: the end, shown whatever the interval
    progress.update(2800)  # shown once
    assert log.getvalue().splitlines() == [
        "1200/2800 images (43%) in 30 s, ~40 s left",  # 30 s * 1600 / 1200
        "2000/2800 images (71%) in 61 s, ~24 s left",
        "2800/2800 images (100%) in 70 s",
    ]


def test_the_bar_is_keras_on_a_terminal_or_in_jupyter_and_lines_elsewhere(monkeypatch):
    assert isinstance(progress_bar(10, "class folder", stream=Terminal()), keras.utils.Progbar)
    with monkeypatch.context() as patched:  # a notebook's stdout is no terminal, but it draws the bar
        patched.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
        assert isinstance(progress_bar(10, "class folder", stream=io.StringIO()), keras.utils.Progbar)
    log = io.StringIO()
    progress = progress_bar(10, "class folder", stream=log)
    assert isinstance(progress, LogProgress)
    progress.update(10)
    assert log.getvalue() == "10/10 class folders (100%) in 0 s\n"
