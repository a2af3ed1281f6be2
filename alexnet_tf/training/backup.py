"""Crash-safe, resumable training backups: a kill at any instant, inside a backup write included, costs at most the
work since the last complete backup, and the resumed run continues at the exact batch where that backup was taken.

A backup is two files in `checkpoints/`: `backup-<step>.weights.h5` (weights, optimizer slots, step counter and
learning rate, written by Keras under a temporary name, flushed to disk, then renamed) and `backup-<step>.json`
(epoch, batch within the epoch, unreadable records before it, the dropout generators' states, the schedule's
state, the weights file's size), written last: the JSON is the commit. Only then are older backups deleted, so one
complete backup always exists. A resume takes the newest backup whose weights are complete and load, and says in
one line what it skipped.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import time
from collections.abc import Callable

import keras
import numpy as np

from alexnet_tf.process import atomic, disk

_NAME = re.compile(r"^backup-(\d{12})\.json$")
PARTIAL_PREFIX = "unfinished-"


def _write_weights(model: keras.Model, path: pathlib.Path) -> None:
    """Keras' weights file (model and optimizer variables) at `path`, flushed to the disk.

    Assembled in memory, then written with plain file I/O: HDF5 writing straight to a disk that fills up leaves
    the library in a state that crashes the process at exit (Keras 3.15 + h5py on a full tmpfs, measured: SIGSEGV
    after the OSError), while a failed write() is only an OSError. Costs one file's size of memory for a moment.
    """
    try:
        from keras.src.saving import saving_lib

        buffer = io.BytesIO()
        store = saving_lib.H5IOStore(buffer, mode="w")
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
        store.close()
    except (ImportError, AttributeError, TypeError):  # a Keras without these internals: its public path
        model.save_weights(path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        return
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def _seed_generators(model: keras.Model) -> list:
    """Dropout's random-generator state variables: not in Keras' weights file, needed for identical dropout masks."""
    return sorted((v for v in model.variables if "seed_generator_state" in v.path), key=lambda v: v.path)


class Backups:
    """The backups of one run directory's `checkpoints/` folder."""

    def __init__(self, directory: str | pathlib.Path, warn: Callable[[str], None] = print):
        self.directory = pathlib.Path(directory)
        self.warn = warn

    def _committed(self) -> list[tuple[int, pathlib.Path]]:
        if not self.directory.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def exists(self) -> bool:
        """Whether there is a backup to resume from (ours, or Keras' from an earlier alexnet-tf)."""
        return bool(self._committed()) or (self.directory / "latest.weights.h5").is_file()

    def save(self, model: keras.Model, *, epoch: int, batch: int, state: dict | None = None,
             unreadable: int = 0) -> dict:
        """Back up the model at `batch` batches into epoch `epoch` (0-based), `unreadable` records of the epoch
        having been dropped before that point; returns the metadata written.
        A second backup at the same step (an epoch's end right after a timed backup) rewrites only the JSON."""
        with disk.guard(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
        step = int(model.optimizer.iterations.numpy())
        stem = f"backup-{step:012d}"
        weights = self.directory / f"{stem}.weights.h5"
        partial = self.directory / f"{PARTIAL_PREFIX}{stem}.weights.h5"
        started = time.monotonic()
        record = self.directory / f"{stem}.json"
        previous = self._committed()
        kept = (f"the backup at step {previous[0][0]} is kept: free space and run the same command to resume"
                if previous else "no backup was written yet")
        written_now = not (weights.is_file() and record.is_file())
        if written_now:
            with disk.guard(weights, needed=disk.variable_bytes(model.variables + list(model.optimizer.variables)),
                            temporaries=[partial], note=kept):
                _write_weights(model, partial)
                partial.replace(weights)
        metadata = {
            "epoch": epoch, "batch": batch, "unreadable_records": unreadable, "step": step, "weights": weights.name,
            "bytes": weights.stat().st_size,
            "seed_generators": {v.path: np.asarray(v.numpy()).tolist() for v in _seed_generators(model)},
            "state": state or {}, "written_at": time.time(), "write_seconds": round(time.monotonic() - started, 3),
        }
        with disk.guard(record, temporaries=[weights] if written_now else [], note=kept):
            atomic.write_text(record, json.dumps(metadata, indent=1) + "\n")  # the commit
        for path in self.directory.iterdir():  # now the older backups (and any unfinished write) can go
            older = path.name.startswith("backup-") and not path.name.startswith(stem)
            if older or path.name.startswith(PARTIAL_PREFIX):
                path.unlink(missing_ok=True)
        return metadata

    def restore(self, model: keras.Model) -> dict | None:
        """Load the newest complete backup into `model` (built, compiled, optimizer built); its metadata, or None
        when there is none. Unfinished and damaged backups are skipped with one line each."""
        if not self.directory.is_dir():
            return None
        for path in sorted(self.directory.glob(f"{PARTIAL_PREFIX}*")):
            self.warn(f"ignoring {path.name}: an unfinished backup (the run stopped while writing it)")
            path.unlink(missing_ok=True)
        for step, path in self._committed():
            try:
                metadata = json.loads(path.read_text())
                weights = self.directory / metadata["weights"]
                size = weights.stat().st_size if weights.is_file() else None
                if size != metadata["bytes"]:
                    raise ValueError(f"its weights file has {size} bytes, {metadata['bytes']} were written")
                model.load_weights(weights)
            except Exception as error:  # noqa: BLE001 - any damage (JSON, HDF5, shapes) means: use an older one
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                self.warn(f"ignoring the backup at step {step}: damaged ({reason[:160]})")
                continue
            by_path = {v.path: v for v in _seed_generators(model)}
            for name, value in metadata.get("seed_generators", {}).items():
                if name in by_path:
                    by_path[name].assign(np.asarray(value, by_path[name].dtype))
            return metadata
        return self._restore_keras_backup(model)

    def _restore_keras_backup(self, model: keras.Model) -> dict | None:
        """A backup written by Keras' BackupAndRestore (alexnet-tf before crash-safe backups): its weights, resumed
        at the start of the epoch it was in (it did not record more), so an upgrade mid-run keeps the run."""
        weights, metadata = self.directory / "latest.weights.h5", self.directory / "training_metadata.json"
        if not (weights.is_file() and metadata.is_file()):
            return None
        try:
            epoch = int(json.loads(metadata.read_text())["epoch"])
            model.load_weights(weights)
        except Exception as error:  # noqa: BLE001 - a damaged old backup: start over, say why
            self.warn(f"ignoring {weights.name}: damaged ({str(error).splitlines()[0][:160]})")
            return None
        self.warn(f"resuming from {weights.name}, a backup of an earlier alexnet-tf: epoch {epoch + 1} starts over")
        return {"epoch": epoch, "batch": 0, "step": int(model.optimizer.iterations.numpy()), "state": {}}


class EpochPosition(keras.callbacks.Callback):
    """The data position, (epoch, batches to skip, unreadable records among them), that `pipeline.train_epochs`
    asks for when each epoch's pass starts; set at each epoch's begin, before Keras starts the pass: the resumed
    epoch skips exactly the records that were trained (and the unreadable ones between them)."""

    def __init__(self, start_epoch: int = 0, start_batch: int = 0, start_unreadable: int = 0):
        super().__init__()
        self.start_epoch, self.start_batch, self.start_unreadable = start_epoch, start_batch, start_unreadable
        self.current = (start_epoch, start_batch, start_unreadable)

    def __call__(self) -> tuple[int, int, int]:
        return self.current

    def on_epoch_begin(self, epoch, logs=None):
        resumed = epoch == self.start_epoch
        self.current = (epoch, self.start_batch if resumed else 0, self.start_unreadable if resumed else 0)


class ExactStepCount(keras.callbacks.Callback):
    """Keeps `optimizer.iterations` equal to the steps actually trained. Keras 3.15 adds one to it at the end of
    every epoch over a dataset of unknown length (the call that finds the data exhausted counts as a step; measured:
    24 batches over 2 epochs -> 26 iterations, identical weights), so the count would drift one step per epoch from
    the plan, and warm-up (which reads it) with it. Must come first among the callbacks."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._done = int(self.model.optimizer.iterations.numpy()), 0

    def on_train_batch_end(self, batch, logs=None):
        self._done += 1

    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.iterations.assign(self._start + self._done)


class BackupEvery(keras.callbacks.Callback):
    """Back up every `minutes` of wall time (or every `steps` batches, when given) and at every epoch's end.

    `stateful` maps names to callbacks with `get_state()`; their states go into each backup (put this callback
    after them, so an epoch-end backup holds their end-of-epoch state). With a `counter` (one input pipeline, no
    fixed epoch length), each backup also records the unreadable records before its position.
    """

    def __init__(self, backups: Backups, *, minutes: float, steps: int | None = None, start_epoch: int = 0,
                 start_batch: int = 0, stateful: dict | None = None, counter=None, batch_size: int = 0):
        super().__init__()
        self.backups, self.seconds, self.steps = backups, minutes * 60.0, steps
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.stateful = stateful or {}
        self.counter, self.batch_size = counter, batch_size
        self._offset = self._since = 0
        self._last = time.monotonic()
        self.position = (start_epoch, start_batch)  # (epoch, batches into it) of the weights as they are now
        self.last: dict | None = None  # the newest backup's metadata

    def save(self) -> dict:
        """Back up at the current position now (the pre-emption path calls this too); its metadata."""
        epoch, batch = self.position
        state = {name: callback.get_state() for name, callback in self.stateful.items()}
        unreadable = self.counter.unreadable_before(batch, self.batch_size) if self.counter and batch else 0
        if not (self.last and self.last["step"] == int(self.model.optimizer.iterations.numpy())
                and (self.last["epoch"], self.last["batch"]) == (epoch, batch)):
            self.last = self.backups.save(self.model, epoch=epoch, batch=batch, state=state,
                                          unreadable=unreadable)
        self._since, self._last = 0, time.monotonic()
        return self.last

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = self.start_batch if epoch == self.start_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        self._since += 1
        self.position = (self._epoch, self._offset + batch + 1)
        due = self._since >= self.steps if self.steps else time.monotonic() - self._last >= self.seconds
        if due:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.position = (epoch + 1, 0)
        self.save()
