"""Keras callbacks of a training run: the learning-rate schedule (warm-up, plateau with resumable counters, fixed
steps), the learning rate and skipped records in each epoch's logs, progress lines in a log, and `best.keras`
written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import keras

from alexnet_tf.data import pipeline
from alexnet_tf.process import atomic, disk
from alexnet_tf.process.progress import LogProgress
from alexnet_tf.training.config import Config


# === Learning-rate schedule callbacks ===
class WarmUp(keras.callbacks.Callback):
    """Linear warm-up from lr/10 to lr over the first `steps` optimizer steps (read from the optimizer, so a
    resumed run continues where it was)."""

    def __init__(self, steps: int, learning_rate: float):
        super().__init__()
        self.steps, self.learning_rate = steps, learning_rate

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step <= self.steps:
            fraction = min(step / self.steps, 1.0)
            self.model.optimizer.learning_rate.assign(self.learning_rate * (0.1 + 0.9 * fraction))


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the learning rate in each epoch's logs (CSV, TensorBoard, figures mark the drops from it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class SkippedRecords(keras.callbacks.Callback):
    """Reports, per epoch, the training records that could not be read and were dropped: a line and a
    `skipped_records` entry in the epoch's logs when there were any (a clean run's progress lines stay clean).
    A resumed epoch adds the `start_unreadable` records its backup says were dropped before the resume point."""

    def __init__(self, counter: pipeline.SkipCounter, start_epoch: int = 0, start_unreadable: int = 0):
        super().__init__()
        self.counter, self.start_epoch, self.start_unreadable = counter, start_epoch, start_unreadable

    def on_epoch_end(self, epoch, logs=None):
        skipped = self.counter.skipped + (self.start_unreadable if epoch == self.start_epoch else 0)
        if skipped:
            if logs is not None:
                logs["skipped_records"] = skipped
            print(f"epoch {epoch + 1}: skipped {skipped} unreadable training record(s)")
        self.counter.reset()


class LogLines(keras.callbacks.Callback):
    """Where stdout is a log, fit prints one line per epoch (verbose=2), and an ImageNet epoch on a CPU is hours:
    this adds a line every `interval` seconds within the epoch, "epoch 2: 1200/10009 steps (12%) in 30 s, ~220 s
    left - loss: 2.3012 - top1_error: 0.9000". A resumed epoch counts from the batch it resumed at."""

    def __init__(self, steps_per_epoch: int | None, start_epoch: int = 0, start_batch: int = 0, **progress):
        super().__init__()
        self.steps, self.start_epoch, self.start_batch = steps_per_epoch, start_epoch, start_batch
        self.options = progress  # LogProgress' interval, stream, clock
        self.first, self.progress = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.first = self.start_batch if epoch == self.start_epoch else 0
        self.progress = LogProgress(self.steps, "step", prefix=f"epoch {epoch + 1}: ", start=self.first, **self.options)

    def on_train_batch_end(self, batch, logs=None):
        step = self.first + batch + 1
        if self.steps is not None and step >= self.steps:
            return  # Keras' own line for the epoch follows
        if self.progress.due(step):
            shown = ("loss", "top1_error", "top5_error")
            self.progress.update(step, " - ".join(f"{k}: {float(logs[k]):.4f}" for k in shown if k in (logs or {})))


class StopAfterEpoch(keras.callbacks.Callback):
    """Ends a fit after its first epoch (the rest of an interrupted epoch, fitted on its own)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters (epochs without improvement, best value, cooldown) go into backups and come
    back on resume; Keras' own resets them at every `fit`, so a resumed run would wait `patience` epochs anew.
    (The learning rate itself is an optimizer variable, in the backup's weights file.)"""

    _pending: dict | None = None
    _fitted = False

    def get_state(self) -> dict:
        return {"wait": int(self.wait), "best": float(self.best), "cooldown_counter": int(self.cooldown_counter)}

    def set_state(self, state: dict) -> None:
        self._pending = dict(state)

    def on_train_begin(self, logs=None):
        if self._pending is None and self._fitted:  # a second fit of the same run: carry on
            self._pending = self.get_state()
        super().on_train_begin(logs)
        self._fitted = True
        if self._pending:
            self.wait, self.best = self._pending["wait"], self._pending["best"]
            self.cooldown_counter, self._pending = self._pending["cooldown_counter"], None


def schedule_callbacks(config: Config, steps_per_epoch: int, monitor: str) -> list[keras.callbacks.Callback]:
    t = config.train
    callbacks: list[keras.callbacks.Callback] = [LearningRateLogger()]
    if t.warmup_epochs:
        callbacks.insert(0, WarmUp(max(1, round(t.warmup_epochs * steps_per_epoch)), t.learning_rate))
    if t.schedule == "plateau":
        # lr/10 when the monitored error stops improving; the floor stops it after `max_drops` divisions.
        callbacks.append(PlateauSchedule(
            monitor=monitor, factor=0.1, patience=t.plateau_patience, mode="min", verbose=1,
            min_lr=t.learning_rate * 0.1**t.max_drops * 0.999,
        ))
    elif t.schedule == "step":
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: t.learning_rate * 0.1 ** min(epoch // t.step_epochs, t.max_drops)
        ))
    return callbacks


# === The run's files ===
class HistoryFile(keras.callbacks.Callback):
    """`history.csv`, one row per epoch, in Keras' CSVLogger format ("epoch" then the sorted log keys, "NA" where an
    epoch has no value), rewritten whole under a temporary name at each epoch's end. Rows of epochs from
    `start_epoch` on were written by a run stopped before its epoch-end backup committed them: they are dropped,
    so the resumed run's rows replace them, never repeat them. A key that first appears later (validation every N
    epochs, skipped records) gets a column; CSVLogger would fix its columns at the first epoch and drop it."""

    def __init__(self, path: pathlib.Path, start_epoch: int = 0):
        super().__init__()
        self.path, self.start_epoch = path, start_epoch
        self.rows: list[dict] | None = None

    def on_train_begin(self, logs=None):
        if self.rows is not None:  # the second fit of a resumed run: carry on
            return
        self.rows = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < self.start_epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        keys = sorted({key for row in self.rows for key in row} - {"epoch"})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", *keys], restval="NA", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, out.getvalue())


def save_keras_atomic(model: keras.Model, path: pathlib.Path) -> None:
    """`model.save(path)` under a temporary name first: a kill mid-write or a full disk (`disk.WriteError`) never
    leaves a half file at `path`."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    kept = f"{path.name} is as it was" if path.exists() else ""
    optimizer = getattr(model, "optimizer", None)  # an uncompiled model has none
    with disk.guard(path, needed=disk.variable_bytes(model.variables + list(optimizer.variables if optimizer else [])),
                    temporaries=[tmp], note=kept):
        model.save(tmp)
        tmp.replace(path)


class AtomicBestModel(keras.callbacks.Callback):
    """Keep `best.keras`: the epoch with the lowest monitored error, written under a temporary name first, and its
    error in `best.json` beside it, from which a resumed run starts (not from infinity)."""

    def __init__(self, path: pathlib.Path, monitor: str):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.record = path.with_suffix(".json")
        self.best = math.inf
        if self.record.is_file() and path.is_file():
            saved = json.loads(self.record.read_text())
            if saved.get("monitor") == monitor:
                self.best = float(saved["value"])

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            save_keras_atomic(self.model, self.path)
            atomic.write_text(self.record, json.dumps({"monitor": self.monitor, "value": self.best,
                                                       "epoch": epoch + 1}) + "\n")
