"""Crash-safe training: `kill -9` inside a backup write and between backups, then the same command again. The
resumed run continues at the exact batch, trains exactly the planned steps, and ends with the weights of an
uninterrupted run (seeded, deterministic data)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from alexnet_tf.network.model import load_model
from tests.conftest import ROOT

PLAN = 12  # 2 epochs x 6 steps
TRAIN = ["train", "--preset", "smoke", "--steps-per-epoch", "6", "--epochs", "2", "--set", "train.backup_every=3",
         "--set", "data.deterministic=true", "--set", "data.seed=7", "--set", "model.dropout=0.5"]

# Runs `alexnet-tf` with one patch: SIGKILL at a chosen moment (the test's "worst moment"), in the real process.
KILLER = """
import os, signal, sys
import alexnet_tf.training.backup as backup
where, at = sys.argv[1], int(sys.argv[2])
if where == "write":  # inside the at-th weights write: a third of the file on disk, then killed
    real, writes = backup._write_weights, []
    def write(model, path):
        writes.append(path)
        real(model, path)
        if len(writes) == at:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
            os.kill(os.getpid(), signal.SIGKILL)
    backup._write_weights = write
else:  # after the optimizer step `at`, between backups
    real_end = backup.BackupEvery.on_train_batch_end
    def end(self, batch, logs=None):
        real_end(self, batch, logs)
        if int(self.model.optimizer.iterations.numpy()) == at:
            os.kill(os.getpid(), signal.SIGKILL)
    backup.BackupEvery.on_train_batch_end = end
from alexnet_tf.cli import main
sys.exit(main(sys.argv[3:]))
"""


def train(run_dir, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    args = [*TRAIN, "--run-dir", str(run_dir)]
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
