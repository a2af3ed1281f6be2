"""Crash-safe training: `kill -9` inside a backup write and between backups, then the same command again. The
resumed run continues at the exact batch, trains exactly the planned steps, and ends with the weights of an
uninterrupted run (seeded, deterministic data)."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from alexnet_tf.network.model import load_model
from tests.conftest import ROOT

PLAN = 12  # 2 epochs x 6 steps
TRAIN = ["train", "--preset", "smoke", "--steps-per-epoch", "6", "--epochs", "2", "--set", "train.backup_every=3",
         "--set", "data.deterministic=true", "--set", "data.seed=7", "--set", "model.dropout=0.5"]

# Runs `alexnet-tf` with one patch: a signal at a chosen moment (the test's "worst moment"), in the real process.
KILLER = """
import os, signal, sys
import alexnet_tf.training.backup as backup
import alexnet_tf.training.callbacks as callbacks
where, at = sys.argv[1], int(sys.argv[2])
if where in ("write", "term-write", "enospc"):  # the at-th weights write: killed inside it, SIGTERM twice around
    real, writes = backup._write_weights, []  # it, or the disk full a third of the way in
    def write(model, path):
        writes.append(path)
        if where == "term-write" and len(writes) == at:
            os.kill(os.getpid(), signal.SIGTERM)
        real(model, path)
        if len(writes) == at:
            if where == "term-write":
                os.kill(os.getpid(), signal.SIGTERM)
                return
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
            if where == "enospc":
                import errno
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.kill(os.getpid(), signal.SIGKILL)
    backup._write_weights = write
elif where == "history":  # right after epoch `at`'s history row, before its epoch-end backup
    real_row = callbacks.HistoryFile.on_epoch_end
    def row(self, epoch, logs=None):
        real_row(self, epoch, logs)
        if epoch == at:
            os.kill(os.getpid(), signal.SIGKILL)
    callbacks.HistoryFile.on_epoch_end = row
else:  # after the optimizer step `at`, between backups: SIGKILL ("step") or SIGTERM ("term")
    real_end = backup.BackupEvery.on_train_batch_end
    def end(self, batch, logs=None):
        real_end(self, batch, logs)
        if int(self.model.optimizer.iterations.numpy()) == at:
            os.kill(os.getpid(), signal.SIGTERM if where == "term" else signal.SIGKILL)
    backup.BackupEvery.on_train_batch_end = end
from alexnet_tf.cli import main
sys.exit(main(sys.argv[3:]))
"""


def train(run_dir, kill: tuple[str, int] | None = None, args=TRAIN) -> subprocess.CompletedProcess:
    args = [*args, "--run-dir", str(run_dir)]
    command = [sys.executable, "-c", KILLER, kill[0], str(kill[1]), *args] if kill else \
        [sys.executable, "-m", "alexnet_tf.cli", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def committed(run_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "checkpoints").glob("backup-*.json"))]


@pytest.fixture(scope="module")
def uninterrupted(demo_cache, module_tmp_path):
    run_dir = module_tmp_path / "uninterrupted"
    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return load_model(run_dir / "final.keras")


def assert_same_run(run_dir, uninterrupted):
    model = load_model(run_dir / "final.keras")
    assert int(model.optimizer.iterations.numpy()) == PLAN
    for ours, theirs in zip(model.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_a_kill_inside_a_backup_write_resumes_from_the_previous_backup(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    killed = train(run_dir, kill=("write", 2))  # backups at steps 3 and 6: killed while writing the second
    assert killed.returncode == -9
    assert [b["step"] for b in committed(run_dir)] == [3]
    assert list((run_dir / "checkpoints").glob("unfinished-*"))  # the half-written file is there

    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "ignoring unfinished-backup-000000000006.weights.h5: an unfinished backup" in result.stdout
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in result.stdout
    assert not list((run_dir / "checkpoints").glob("unfinished-*"))
    assert_same_run(run_dir, uninterrupted)


def test_two_kills_between_backups_end_with_the_uninterrupted_weights(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir, kill=("step", 5)).returncode == -9  # 2 steps after the step-3 backup
    second = train(run_dir, kill=("step", 10))  # resumes at step 3, killed 1 step after the step-9 backup
    assert second.returncode == -9
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in second.stdout

    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from the backup at epoch 2, batch 3 (step 9)" in result.stdout
    assert_same_run(run_dir, uninterrupted)
    assert [b["step"] for b in committed(run_dir)] == [PLAN]  # only the latest backup is kept


def history_epochs(run_dir) -> list[int]:
    with open(run_dir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_sigterm_mid_epoch_backs_up_at_that_step_and_the_resume_finishes_the_plan(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    stopped = train(run_dir, kill=("term", 4))  # 1 step after the step-3 backup
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    line = re.search(r"SIGTERM: stopped at epoch 1, batch 4 \(step 4\); backup written to .* \(([\d.]+) s after "
                     r"the signal\); run the same command to resume", stopped.stderr)
    assert line and float(line[1]) < 30, stopped.stderr[-2000:]
    assert [b["step"] for b in committed(run_dir)] == [4]
    assert "Traceback" not in stopped.stderr and "finalizing GeneratorDataset" not in stopped.stderr

    # The resumed run is then killed after epoch 1's history row, before the epoch-end backup commits it.
    killed = train(run_dir, kill=("history", 0))
    assert killed.returncode == -9
    assert "resuming from the backup at epoch 1, batch 4 (step 4)" in killed.stdout
    assert history_epochs(run_dir) == [0]

    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from the backup at epoch 1, batch 4 (step 4)" in result.stdout
    assert history_epochs(run_dir) == [0, 1]  # one row per epoch, the killed run's row replaced
    assert_same_run(run_dir, uninterrupted)  # the remaining 8 steps only: one more would change the weights


def assert_full_disk_stop(stopped, run_dir):
    assert stopped.returncode == 2, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("alexnet-tf train: error:")]
    assert len(errors) == 1 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    assert f"cannot write {run_dir / 'checkpoints' / 'backup-000000000006.weights.h5'}: no space left on the device (" \
        in errors[0]
    assert "MB needed" in errors[0]
    assert errors[0].endswith("the backup at step 3 is kept: free space and run the same command to resume")
    assert [b["step"] for b in committed(run_dir)] == [3]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "backup-000000000003.json", "backup-000000000003.weights.h5"]


def test_sigterm_twice_in_a_backup_write_then_a_full_disk_keep_a_whole_backup(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    stopped = train(run_dir, kill=("term-write", 1))  # the step-3 backup: SIGTERM before and after its write
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "stopped at epoch 1, batch 3 (step 3)" in stopped.stderr
    assert [b["step"] for b in committed(run_dir)] == [3]
    assert not list((run_dir / "checkpoints").glob("unfinished-*"))

    full = train(run_dir, kill=("enospc", 1))  # resumed at step 3; its first backup (step 6) finds the disk full
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in full.stdout
    assert_full_disk_stop(full, run_dir)

    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "ignoring" not in result.stdout
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in result.stdout
    assert_same_run(run_dir, uninterrupted)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real file system that fills up: a 700 MB tmpfs (the first 455 MB backup fits, the second does not)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_exits_2_and_the_run_resumes_once_there_is_space(uninterrupted, small_tmpfs):
    run_dir = small_tmpfs / "run"
    assert_full_disk_stop(train(run_dir), run_dir)
    subprocess.run(["mount", "-o", "remount,size=3g", str(small_tmpfs)], check=True)
    result = train(run_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in result.stdout
    assert_same_run(run_dir, uninterrupted)


def test_a_resumed_epoch_skips_the_unreadable_records_before_its_backup(demo_cache, tmp_path):
    """Batches are made after unreadable records are dropped: the resume must skip them too, or it re-trains
    as many examples as there were unreadable records before the backup."""
    import tensorflow as tf

    from alexnet_tf.data import records
    from alexnet_tf.data.prepare import prepare

    shards = tmp_path / "shards"
    prepare("demo", shards, progress=False)
    shard = next(shards.glob("train-00000-of-*"))
    good = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(shard))]
    broken = records.encode_example(b"\xff\xd8\xff\xe0 not a jpeg", 1, height=256, width=256)
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for i, record in enumerate(good):
            writer.write(record)
            if i < 6:
                writer.write(broken)
    args = [*TRAIN[:3], "--data", f"records:{shards}", "--epochs", "1", "--set", "train.steps_per_epoch=none",
            "--set", "train.backup_every=1000", *TRAIN[9:]]
    whole = train(tmp_path / "whole", args=args)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    assert "epoch 1: skipped 6 unreadable training record(s)" in whole.stdout

    run_dir = tmp_path / "run"
    stopped = train(run_dir, kill=("term", 10), args=args)
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    before = committed(run_dir)[0]["unreadable_records"]
    assert 0 < before < 6  # with this seed, some of the unreadable records came before step 10
    resumed = train(run_dir, args=args)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "epoch 1: skipped 6 unreadable training record(s)" in resumed.stdout  # the epoch's count, both parts
    ours, theirs = load_model(run_dir / "final.keras"), load_model(tmp_path / "whole" / "final.keras")
    assert int(ours.optimizer.iterations.numpy()) == int(theirs.optimizer.iterations.numpy())
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_skipped_records_are_logged_only_when_there_were_any(capsys):
    from alexnet_tf.data.pipeline import SkipCounter
    from alexnet_tf.training.callbacks import SkippedRecords

    counter = SkipCounter()
    callback = SkippedRecords(counter, start_epoch=1, start_unreadable=2)
    clean, resumed = {}, {}
    callback.on_epoch_end(0, clean)  # nothing unreadable: no "skipped_records: 0" on the progress line
    callback.on_epoch_end(1, resumed)  # the resumed epoch: the 2 its backup counted before the resume point
    assert clean == {} and resumed == {"skipped_records": 2}
    assert capsys.readouterr().out == "epoch 2: skipped 2 unreadable training record(s)\n"


def test_a_damaged_backup_is_skipped_with_one_line(tmp_path):
    import keras

    from alexnet_tf.training.backup import Backups

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    warnings = []
    backups = Backups(tmp_path, warn=warnings.append)
    backups.save(model, epoch=0, batch=4)
    (tmp_path / "backup-000000000000.weights.h5").write_bytes(b"not hdf5")  # damaged after it was committed
    assert backups.restore(model) is None
    assert len(warnings) == 1 and "ignoring the backup at step 0: damaged" in warnings[0]


def test_best_keras_is_kept_across_a_resume(tmp_path):
    """A resumed process starts from the best error recorded beside best.keras, not from infinity."""
    import keras

    from alexnet_tf.training.callbacks import AtomicBestModel

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    first = AtomicBestModel(tmp_path / "best.keras", "val_top1_error")
    first.set_model(model)
    first.on_epoch_end(0, {"val_top1_error": 0.2})
    written = (tmp_path / "best.keras").stat().st_mtime_ns

    after_crash = AtomicBestModel(tmp_path / "best.keras", "val_top1_error")  # a new process
    after_crash.set_model(model)
    after_crash.on_epoch_end(1, {"val_top1_error": 0.3})  # worse than before the crash: kept
    assert (tmp_path / "best.keras").stat().st_mtime_ns == written
    after_crash.on_epoch_end(2, {"val_top1_error": 0.1})
    assert json.loads((tmp_path / "best.json").read_text()) == {"monitor": "val_top1_error", "value": 0.1,
                                                               "epoch": 3}


def test_the_plateau_schedule_state_survives_a_backup(tmp_path):
    """wait, best and cooldown go into the backup and come back after Keras' reset at the start of a fit."""
    import keras

    from alexnet_tf.training.backup import Backups
    from alexnet_tf.training.callbacks import PlateauSchedule

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    before = PlateauSchedule(monitor="val_top1_error", patience=3, mode="min")
    before.set_model(model)
    before.on_train_begin()
    for epoch, error in enumerate((0.5, 0.6, 0.7)):  # one improvement, then two epochs without
        before.on_epoch_end(epoch, {"val_top1_error": error})
    Backups(tmp_path).save(model, epoch=3, batch=0, state={"plateau": before.get_state()})

    after = PlateauSchedule(monitor="val_top1_error", patience=3, mode="min")  # the resumed process
    after.set_model(model)
    after.set_state(Backups(tmp_path).restore(model)["state"]["plateau"])
    after.on_train_begin()
    assert after.get_state() == {"wait": 2, "best": 0.5, "cooldown_counter": 0}
    after.on_epoch_end(3, {"val_top1_error": 0.8})  # the third epoch without improvement: the drop
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)


def test_a_backup_of_an_earlier_version_still_resumes(tmp_path):
    """Runs started before crash-safe backups left Keras' latest.weights.h5 + training_metadata.json."""
    import keras

    from alexnet_tf.training.backup import Backups

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(17)
    model.save_weights(tmp_path / "latest.weights.h5")
    (tmp_path / "training_metadata.json").write_text('{"epoch": 2, "batch": 5}')
    model.optimizer.iterations.assign(0)
    warnings = []
    restored = Backups(tmp_path, warn=warnings.append).restore(model)
    assert (restored["epoch"], restored["batch"], restored["step"]) == (2, 0, 17)
    assert "epoch 3 starts over" in warnings[0]
