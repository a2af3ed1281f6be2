"""A full disk or a read-only directory: `disk.WriteError`, one line naming the path, the bytes needed and free;
the write's temporaries removed, the file under the final name as it was."""

import errno
import os

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.process import atomic, disk


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk quota is exceeded"),
    (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    # what TensorFlow's C++ writers raise (measured on a full tmpfs): the errno's text only
    (tf.errors.ResourceExhaustedError(None, None, "/x/variables/part-0.tempstate1; No space left on device"),
     "no space left on the device"),
    # h5py (Keras' weights files) keeps errno, with its own text around it
    (OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: errno = 28, error message = "
             "'No space left on device')"), "no space left on the device"),
    (ValueError("shapes do not match"), None),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), None),
])
def test_which_errors_are_failed_writes(error, reason):
    assert disk.reason_of(error) == reason


def test_guard_names_the_path_the_sizes_and_removes_the_temporaries(tmp_path):
    temporary = tmp_path / ".big.tmp"
    with pytest.raises(disk.WriteError) as caught:
        with disk.guard(tmp_path / "big", needed=3_000_000, temporaries=[temporary], note="the old one is kept"):
            temporary.write_bytes(b"x" * 100)
            full_disk()
    message = str(caught.value)
    assert message.startswith(f"cannot write {tmp_path / 'big'}: no space left on the device (3.0 MB needed, ")
    assert " free); the old one is kept" in message and "\n" not in message
    assert not temporary.exists()


def test_guard_lets_other_errors_through(tmp_path):
    with pytest.raises(ValueError, match="not about disks"):
        with disk.guard(tmp_path / "x"):
            raise ValueError("not about disks")


def test_atomic_writes_keep_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old")
    real_write_text = type(target).write_text

    def half_then_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        full_disk()

    monkeypatch.setattr(type(target), "write_text", half_then_full)
    with pytest.raises(disk.WriteError, match="config.json: no space left on the device"):
        atomic.write_text(target, "new contents")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]

    monkeypatch.setattr(np, "savez", lambda f, **arrays: (f.write(b"PK half"), full_disk()))
    with pytest.raises(disk.WriteError, match="stats.npz"):
        atomic.save_npz(tmp_path / "stats.npz", mean=np.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_read_only_directory_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only directories")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(disk.WriteError, match="permission denied"):
            atomic.write_text(tmp_path / "a.txt", "x")
    finally:
        tmp_path.chmod(0o700)


def small_model():
    import keras

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_a_backup_that_does_not_fit_keeps_the_previous_one(tmp_path, monkeypatch):
    from alexnet_tf.training import backup

    model = small_model()
    backups = backup.Backups(tmp_path)
    backups.save(model, epoch=0, batch=3)
    model.optimizer.iterations.assign(6)
    real = backup._write_weights

    def half_then_full(model, path):
        real(model, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        full_disk()

    monkeypatch.setattr(backup, "_write_weights", half_then_full)
    with pytest.raises(disk.WriteError) as caught:
        backups.save(model, epoch=0, batch=6)
    assert "backup-000000000006.weights.h5: no space left on the device (" in str(caught.value)
    assert "the backup at step 0 is kept: free space and run the same command to resume" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup-000000000000.json",
                                                         "backup-000000000000.weights.h5"]
    assert backups.restore(model)["batch"] == 3


def test_a_model_file_that_does_not_fit_leaves_the_old_one(tmp_path, monkeypatch):
    import keras

    from alexnet_tf.training.callbacks import save_keras_atomic

    model = small_model()
    save_keras_atomic(model, tmp_path / "best.keras")
    before = (tmp_path / "best.keras").read_bytes()
    real_save = keras.Model.save

    def half_then_full(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(100)
        full_disk()

    monkeypatch.setattr(keras.Model, "save", half_then_full)
    with pytest.raises(disk.WriteError, match=r"best.keras: no space left on the device \(.*best.keras is as it was"):
        save_keras_atomic(model, tmp_path / "best.keras")
    assert (tmp_path / "best.keras").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
