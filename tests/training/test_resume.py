"""Crash-safe training: `kill -9` inside a backup write and between backups, SIGTERM, a full disk, unreadable
records, then the same command again. The resumed run continues at the exact batch, trains exactly the planned
steps, and ends with the weights of an uninterrupted run (seeded, deterministic data). Each scenario's processes
run in the `scenarios` fixture, two scenarios at a time; its test checks what the scenario recorded."""

import concurrent.futures
import csv
import json
import pathlib
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


def history_epochs(run_dir) -> list[int]:
    with open(run_dir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


# === The scenarios: each runs its processes one after another and records what a test checks ===
# A run is ~20 s, mostly one core (start-up, tracing, writing backups), so the scenarios run two at a time (the
# module's runs take ~40% less time on 2 cores; each is seeded and deterministic, so results do not change).


def kill_inside_a_backup_write(run_dir) -> dict:
    killed = train(run_dir, kill=("write", 2))  # backups at steps 3 and 6: killed while writing the second
    seen = {"killed": killed, "committed": [b["step"] for b in committed(run_dir)],
            "unfinished": list((run_dir / "checkpoints").glob("unfinished-*"))}  # the half-written file
    seen["resumed"] = train(run_dir)
    seen["unfinished_after"] = list((run_dir / "checkpoints").glob("unfinished-*"))
    return seen


def two_kills_between_backups(run_dir) -> dict:
    first = train(run_dir, kill=("step", 5))  # 2 steps after the step-3 backup
    second = train(run_dir, kill=("step", 10))  # resumes at step 3, killed 1 step after the step-9 backup
    resumed = train(run_dir)
    return {"first": first, "second": second, "resumed": resumed,
            "committed": [b["step"] for b in committed(run_dir)]}


def sigterm_mid_epoch_then_a_kill_after_a_history_row(run_dir) -> dict:
    stopped = train(run_dir, kill=("term", 4))  # 1 step after the step-3 backup
    seen = {"stopped": stopped, "committed": [b["step"] for b in committed(run_dir)]}
    # The resumed run is then killed after epoch 1's history row, before the epoch-end backup commits it.
    seen["killed"] = train(run_dir, kill=("history", 0))
    seen["history_after_kill"] = history_epochs(run_dir)
    seen["resumed"] = train(run_dir)
    seen["history"] = history_epochs(run_dir)
    return seen


def full_disk_stop(run_dir) -> dict:
    """What a stop on a full disk during the step-6 backup left: checked by `assert_full_disk_stop`."""
    return {"checkpoints": sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
            "committed": [b["step"] for b in committed(run_dir)]}


def sigterm_twice_in_a_write_then_a_full_disk(run_dir) -> dict:
    stopped = train(run_dir, kill=("term-write", 1))  # the step-3 backup: SIGTERM before and after its write
    seen = {"stopped": stopped, "committed": [b["step"] for b in committed(run_dir)],
            "unfinished": list((run_dir / "checkpoints").glob("unfinished-*"))}
    seen["full"] = train(run_dir, kill=("enospc", 1))  # resumed at step 3; the step-6 backup finds the disk full
    seen["after_full"] = full_disk_stop(run_dir)
    seen["resumed"] = train(run_dir)
    return seen


def a_real_full_disk(run_dir) -> dict:
    """A real file system that fills up: a 700 MB tmpfs (the first 455 MB backup fits, the second does not)."""
    mount = run_dir.parent / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        return {"skip": "cannot mount a tmpfs here (needs root)"}
    try:
        run_dir = mount / "run"
        seen = {"run_dir": run_dir, "full": train(run_dir)}
        seen["after_full"] = full_disk_stop(run_dir)
        subprocess.run(["mount", "-o", "remount,size=3g", str(mount)], check=True)
        seen["resumed"] = train(run_dir)
        if seen["resumed"].returncode == 0:  # read before the tmpfs goes
            final = load_model(run_dir / "final.keras")
            seen["steps"], seen["weights"] = int(final.optimizer.iterations.numpy()), final.get_weights()
        return seen
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def unreadable_records_before_a_backup(run_dir) -> dict:
    """A training shard with 6 unreadable records among the first; one whole epoch, and the same epoch stopped at
    step 10 and resumed."""
    import tensorflow as tf

    from alexnet_tf.data import records
    from alexnet_tf.data.prepare import prepare

    shards = run_dir.parent / "shards"
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
    seen = {"whole": train(run_dir.parent / "whole", args=args)}
    seen["stopped"] = train(run_dir, kill=("term", 10), args=args)
    seen["before"] = committed(run_dir)[0]["unreadable_records"] if committed(run_dir) else None
    seen["resumed"] = train(run_dir, args=args)
    return seen


SCENARIOS = {  # test -> the scenario it checks, in the order they are started (longest first)
    "test_a_resumed_epoch_skips_the_unreadable_records_before_its_backup": unreadable_records_before_a_backup,
    "test_sigterm_twice_in_a_backup_write_then_a_full_disk_keep_a_whole_backup":
        sigterm_twice_in_a_write_then_a_full_disk,
    "test_sigterm_mid_epoch_backs_up_at_that_step_and_the_resume_finishes_the_plan":
        sigterm_mid_epoch_then_a_kill_after_a_history_row,
    "test_two_kills_between_backups_end_with_the_uninterrupted_weights": two_kills_between_backups,
    "test_a_real_full_disk_exits_2_and_the_run_resumes_once_there_is_space": a_real_full_disk,
    "test_a_kill_inside_a_backup_write_resumes_from_the_previous_backup": kill_inside_a_backup_write,
}


@pytest.fixture(scope="module")
def scenarios(request, demo_cache, module_tmp_path):
    """The selected tests' scenarios, started together with the uninterrupted reference run, two at a time."""
    selected = {item.name for item in request.session.items if item.module is request.module} & set(SCENARIOS)

    def uninterrupted():
        result = train(module_tmp_path / "uninterrupted")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return load_model(module_tmp_path / "uninterrupted" / "final.keras")

    def run(name, scenario):
        folder = module_tmp_path / name
        folder.mkdir()
        return scenario(folder / "run")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = {"uninterrupted": pool.submit(uninterrupted)}
        started.update({name: pool.submit(run, name, scenario) for name, scenario in SCENARIOS.items()
                        if name in selected})
        yield {name: future.result for name, future in started.items()}
        for future in started.values():
            future.cancel()


def scenario_of(scenarios, request) -> tuple[dict, object]:
    """This test's recorded scenario and the uninterrupted run's model (each waits for its run to finish)."""
    return scenarios[request.node.name](), scenarios["uninterrupted"]()


def run_dir_of(request) -> pathlib.Path:
    """Where this test's scenario trained (`scenarios` gives each its own folder)."""
    return request.getfixturevalue("module_tmp_path") / request.node.name / "run"


def assert_same_run(run_dir, uninterrupted):
    model = load_model(run_dir / "final.keras")
    assert int(model.optimizer.iterations.numpy()) == PLAN
    for ours, theirs in zip(model.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_a_kill_inside_a_backup_write_resumes_from_the_previous_backup(scenarios, request):
    seen, uninterrupted = scenario_of(scenarios, request)
    assert seen["killed"].returncode == -9
    assert seen["committed"] == [3] and seen["unfinished"]

    result = seen["resumed"]
    ok(result)
    assert "ignoring unfinished-backup-000000000006.weights.h5: an unfinished backup" in result.stdout
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in result.stdout
    assert not seen["unfinished_after"]
    assert_same_run(run_dir_of(request), uninterrupted)


@pytest.mark.slow
def test_two_kills_between_backups_end_with_the_uninterrupted_weights(scenarios, request):
    seen, uninterrupted = scenario_of(scenarios, request)
    assert seen["first"].returncode == -9
    assert seen["second"].returncode == -9
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in seen["second"].stdout

    ok(seen["resumed"])
    assert "resuming from the backup at epoch 2, batch 3 (step 9)" in seen["resumed"].stdout
    assert_same_run(run_dir_of(request), uninterrupted)
    assert seen["committed"] == [PLAN]  # only the latest backup is kept


@pytest.mark.slow
def test_sigterm_mid_epoch_backs_up_at_that_step_and_the_resume_finishes_the_plan(scenarios, request):
    seen, uninterrupted = scenario_of(scenarios, request)
    stopped = seen["stopped"]
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    line = re.search(r"SIGTERM: stopped at epoch 1, batch 4 \(step 4\); backup written to .* \(([\d.]+) s after "
                     r"the signal\); run the same command to resume", stopped.stderr)
    assert line and float(line[1]) < 30, stopped.stderr[-2000:]
    assert seen["committed"] == [4]
    assert "Traceback" not in stopped.stderr and "finalizing GeneratorDataset" not in stopped.stderr

    assert seen["killed"].returncode == -9
    assert "resuming from the backup at epoch 1, batch 4 (step 4)" in seen["killed"].stdout
    assert seen["history_after_kill"] == [0]

    ok(seen["resumed"])
    assert "resuming from the backup at epoch 1, batch 4 (step 4)" in seen["resumed"].stdout
    assert seen["history"] == [0, 1]  # one row per epoch, the killed run's row replaced
    assert_same_run(run_dir_of(request), uninterrupted)  # the remaining 8 steps only: one more would change them


def assert_full_disk_stop(stopped, run_dir, after):
    assert stopped.returncode == 2, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("alexnet-tf train: error:")]
    assert len(errors) == 1 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    assert f"cannot write {run_dir / 'checkpoints' / 'backup-000000000006.weights.h5'}: no space left on the device (" \
        in errors[0]
    assert "MB needed" in errors[0]
    assert errors[0].endswith("the backup at step 3 is kept: free space and run the same command to resume")
    assert after == {"committed": [3],
                     "checkpoints": ["backup-000000000003.json", "backup-000000000003.weights.h5"]}


@pytest.mark.slow
def test_sigterm_twice_in_a_backup_write_then_a_full_disk_keep_a_whole_backup(scenarios, request):
    seen, uninterrupted = scenario_of(scenarios, request)
    stopped = seen["stopped"]
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "stopped at epoch 1, batch 3 (step 3)" in stopped.stderr
    assert seen["committed"] == [3] and not seen["unfinished"]

    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in seen["full"].stdout
    assert_full_disk_stop(seen["full"], run_dir_of(request), seen["after_full"])

    result = seen["resumed"]
    ok(result)
    assert "ignoring" not in result.stdout
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in result.stdout
    assert_same_run(run_dir_of(request), uninterrupted)


@pytest.mark.slow
def test_a_real_full_disk_exits_2_and_the_run_resumes_once_there_is_space(scenarios, request):
    seen, uninterrupted = scenario_of(scenarios, request)
    if "skip" in seen:
        pytest.skip(seen["skip"])
    assert_full_disk_stop(seen["full"], seen["run_dir"], seen["after_full"])
    ok(seen["resumed"])
    assert "resuming from the backup at epoch 1, batch 3 (step 3)" in seen["resumed"].stdout
    assert seen["steps"] == PLAN
    for ours, theirs in zip(seen["weights"], uninterrupted.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_resumed_epoch_skips_the_unreadable_records_before_its_backup(scenarios, request):
    """Batches are made after unreadable records are dropped: the resume must skip them too, or it re-trains
    as many examples as there were unreadable records before the backup."""
    seen = scenarios[request.node.name]()
    ok(seen["whole"])
    assert "epoch 1: skipped 6 unreadable training record(s)" in seen["whole"].stdout
    stopped = seen["stopped"]
    assert stopped.returncode == 143, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert 0 < seen["before"] < 6  # with this seed, some of the unreadable records came before step 10
    ok(seen["resumed"])
    assert "epoch 1: skipped 6 unreadable training record(s)" in seen["resumed"].stdout  # the epoch's count, both parts
    run_dir = run_dir_of(request)
    ours, theirs = load_model(run_dir / "final.keras"), load_model(run_dir.parent / "whole" / "final.keras")
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
