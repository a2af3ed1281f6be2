"""Pre-emption: SIGTERM (what Kubernetes, Slurm and spot instances send before they take the machine) or SIGINT
(Ctrl-C) during training ends the current step, writes a backup at that exact position (the usual atomic protocol)
and stops the run with exit status 128 + the signal's number (143, 130), the status an unhandled signal gives, so
schedulers' requeue rules and shell scripts read it as they always did. The same command resumes at that batch.

A signal during validation takes effect at the epoch's end, after its history row and epoch-end backup. Under
multi-worker training the workers agree after every step (a sum over them of "asked to stop"), so all of them stop
at the same step, each backing up into its own run directory as at every backup.
"""

from __future__ import annotations

import signal
import threading
import time

import keras
import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after writing a backup: `exit_status` is the process's status to exit with."""

    def __init__(self, signum: int, backup: dict, directory, seconds: float | None):
        self.signum, self.backup, self.seconds = signum, backup, seconds
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        when = f"{seconds:.1f} s after the signal" if seconds is not None else f"another worker received {name}"
        super().__init__(
            f"{name}: stopped at epoch {backup['epoch'] + 1}, batch {backup['batch']} (step {backup['step']}); "
            f"backup written to {directory} ({when}); run the same command to resume")


class SignalRequests:
    """While active (a `with` block in the main thread), SIGTERM and SIGINT only ask the run to stop: `signum` is
    set and the work goes on to a safe point. Asking again changes nothing (a second SIGTERM while the backup is
    written cannot damage it), except a second Ctrl-C, which interrupts at once as Ctrl-C always did (the backups'
    protocol keeps the previous backup whole)."""

    def __init__(self):
        self.signum = 0
        self.received_at: float | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.signum:
            self.signum, self.received_at = signum, time.monotonic()
            print(f"{signal.Signals(signum).name}: stopping after this step, then writing a backup", flush=True)

    def __enter__(self) -> SignalRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class StopOnSignal(keras.callbacks.Callback):
    """After each step (and at each epoch's end), stop if a signal asked for it: back up through `backup_every`
    (a `backup.BackupEvery`, which knows the position) and raise `Preempted`. Put it after `backup_every`."""

    def __init__(self, requests: SignalRequests, backup_every, strategy: tf.distribute.Strategy | None = None):
        super().__init__()
        self.requests, self.backup_every = requests, backup_every
        self._vote = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):  # in a graph: eager collectives are slow
            self._vote = tf.function(lambda asked: strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(asked)), axis=None))

    def _asked(self) -> int:
        """The signal to stop on (0: none); across workers, any worker's request stops all of them."""
        local = self.requests.signum
        if self._vote is None:
            return local
        if int(self._vote(tf.constant(1 if local else 0, tf.int32))) == 0:
            return 0
        return local or signal.SIGTERM  # another worker was asked

    def _stop(self, signum: int) -> None:
        metadata = self.backup_every.save()
        received = self.requests.received_at
        seconds = time.monotonic() - received if received is not None else None
        raise Preempted(signum, metadata, self.backup_every.backups.directory, seconds)

    def on_train_batch_end(self, batch, logs=None):
        if signum := self._asked():
            self._stop(signum)

    def on_epoch_end(self, epoch, logs=None):
        if signum := self._asked():
            self._stop(signum)
