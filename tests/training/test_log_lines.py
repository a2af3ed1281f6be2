"""`LogLines`: where stdout is a log, a line every 30 s within an epoch (resumed epochs counted from their batch)."""

import io

import numpy as np

from alexnet_tf.training.callbacks import LogLines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_epoch(callback, clock, epoch, batches, seconds_per_step):
    callback.on_epoch_begin(epoch)
    for batch in range(batches):
        clock.now += seconds_per_step
        callback.on_train_batch_end(batch, {"loss": np.float32(2.3125), "top1_error": 0.9, "lr_other": 1.0})


def test_a_line_every_interval_with_the_running_metrics_and_none_at_the_epochs_end():
    clock, log = Clock(), io.StringIO()
    callback = LogLines(100, clock=clock, stream=log)
    run_epoch(callback, clock, 0, 100, 1.0)  # 100 s: lines at 30, 60, 90 s; Keras prints the epoch's own line
    assert log.getvalue().splitlines() == [
        "epoch 1: 30/100 steps (30%) in 30 s, ~70 s left - loss: 2.3125 - top1_error: 0.9000",
        "epoch 1: 60/100 steps (60%) in 60 s, ~40 s left - loss: 2.3125 - top1_error: 0.9000",
        "epoch 1: 90/100 steps (90%) in 90 s, ~10 s left - loss: 2.3125 - top1_error: 0.9000",
    ]


def test_a_resumed_epoch_counts_from_its_batch_and_the_next_from_zero():
    clock, log = Clock(), io.StringIO()
    callback = LogLines(100, start_epoch=2, start_batch=60, clock=clock, stream=log, interval=20.0)
    run_epoch(callback, clock, 2, 40, 1.0)  # the rest of epoch 3, batches 60..99: 20 steps in 20 s, 20 to go
    run_epoch(callback, clock, 3, 50, 0.5)
    assert log.getvalue().splitlines() == [
        "epoch 3: 80/100 steps (80%) in 20 s, ~20 s left - loss: 2.3125 - top1_error: 0.9000",
        "epoch 4: 40/100 steps (40%) in 20 s, ~30 s left - loss: 2.3125 - top1_error: 0.9000",
    ]


def test_without_a_known_epoch_length_lines_give_the_count():
    clock, log = Clock(), io.StringIO()
    run_epoch(LogLines(None, clock=clock, stream=log), clock, 0, 31, 1.0)
    assert log.getvalue() == "epoch 1: 30 steps in 30 s - loss: 2.3125 - top1_error: 0.9000\n"
