"""`alexnet-tf train` and `evaluate`: the step, the run directory, resuming after kill -9, multi-worker, errors."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from alexnet_tf import build_alexnet
from tests.conftest import ROOT, run_cli


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    model = build_alexnet(10, init="he", input_scale=1 / 64, dropout=0.0)
    model.compile(jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 60, (8, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 10, 8)
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.optimizer.learning_rate.assign(0.001)
    model.train_on_batch(x, y)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert after < before


def test_smoke_run_writes_the_run_directory(smoke_run):
    run_dir, stdout = smoke_run
    for name in ("config.json", "labels.txt", "stats.npz", "best.keras", "final.keras", "history.csv",
                 "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "logs").is_dir() and (run_dir / "checkpoints").is_dir()
    assert json.loads((run_dir / "config.json").read_text())["preset"] == "smoke"
    assert (run_dir / "labels.txt").read_text().split()[:2] == ["arrow", "circle"]
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    for column in ("top1_error", "top5_error", "val_top1_error", "learning_rate"):
        assert column in header
    assert f"alexnet-tf export {run_dir}" in stdout
    assert "validation top-1 error" in stdout
    progress = [line for line in stdout.splitlines() if line.startswith("epoch 1: ")]  # stdout is not a terminal
    assert [line.split(" in ")[0] for line in progress] == ["epoch 1: 1/3 steps (33%)", "epoch 1: 2/3 steps (67%)"]
    assert all(re.search(r"s left - loss: [\d.]+ - top1_error: [\d.]+ - top5_error: [\d.]+$", line)
               for line in progress), progress


def test_evaluate_prints_the_table_and_writes_json(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli("evaluate", str(run_dir), "--out", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AlexNet, 10 crops" in result.stdout and "Top-5" in result.stdout
    payload = json.loads((tmp_path / "eval.json").read_text())
    for row in payload["results"].values():
        assert 0.0 <= row["top1"] <= 1.0 and row["top5"] <= row["top1"] and row["examples"] == 30


def test_ten_crop_evaluation_matches_numpy(smoke_run):
    from alexnet_tf import load_model
    from alexnet_tf.data import pipeline
    from alexnet_tf.data.sources import open_dataset
    from alexnet_tf.data.stats import Stats
    from alexnet_tf.training import evaluate

    run_dir, _ = smoke_run
    model = load_model(run_dir / "best.keras")
    stats = Stats.load(run_dir / "stats.npz")
    uri = json.loads((run_dir / "summary.json").read_text())["data"]
    source = open_dataset(uri, "validation")
    errors = evaluate.evaluate(model, source, stats, ten_crop=True, batch_size=8, progress=False)
    wrong1 = wrong5 = 0
    for images, labels in pipeline.eval_dataset(source, stats, 8, ten_crop=True):
        for crops, label in zip(images.numpy(), labels.numpy()):
            logits = model.predict(crops, verbose=0).astype(np.float64)
            p = np.exp(logits - logits.max(1, keepdims=True))
            ranking = np.argsort(-(p / p.sum(1, keepdims=True)).mean(0))
            wrong1 += ranking[0] != label
            wrong5 += label not in ranking[:5]
    assert errors.examples == 30
    assert errors.top1 == pytest.approx(wrong1 / 30) and errors.top5 == pytest.approx(wrong5 / 30)


@pytest.fixture
def nan_source(tmp_path):
    """A model whose fc8 bias is NaN: every logit is NaN on every CPU, so the first loss is NaN for certain."""
    model = build_alexnet(10, init="he", input_scale=1 / 64)
    kernel, bias = model.get_layer("fc8").get_weights()
    model.get_layer("fc8").set_weights([kernel, np.full_like(bias, np.nan)])
    model.save(tmp_path / "nan.keras")
    return tmp_path / "nan.keras"


@pytest.mark.parametrize("args, message", [
    (["--data", "folder:/does/not/exist"], "is not a directory"),
    pytest.param(["--init-from", "NAN_SOURCE"], "NaN", marks=pytest.mark.slow),
])
def test_clear_errors(demo_cache, nan_source, tmp_path, args, message):
    args = [str(nan_source) if a == "NAN_SOURCE" else a for a in args]
    result = run_cli("train", "--preset", "smoke", "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_class_count_mismatch(demo_cache, tmp_path):
    from alexnet_tf.data.prepare import prepare

    prepare("demo", tmp_path / "shards", progress=False)
    (tmp_path / "shards" / "manifest.json").unlink()
    result = run_cli("train", "--preset", "smoke", "--run-dir", str(tmp_path / "run"),
                     "--data", f"records:{tmp_path / 'shards'}", "--num-classes", "3")
    assert result.returncode == 2
    assert "class count mismatch" in result.stderr


# Worker 1 gets SIGTERM after step 2; without it (argv[1] == 0) the plain command.
TERM_WORKER_1 = """
import json, os, signal, sys
import alexnet_tf.training.backup as backup
at = int(sys.argv[1])
if at and json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
    real_end = backup.BackupEvery.on_train_batch_end
    def end(self, batch, logs=None):
        real_end(self, batch, logs)
        if int(self.model.optimizer.iterations.numpy()) == at:
            os.kill(os.getpid(), signal.SIGTERM)
    backup.BackupEvery.on_train_batch_end = end
from alexnet_tf.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_workers_stop_together_on_sigterm_and_resume_to_the_same_weights(demo_cache, tmp_path):
    import socket

    def run_workers(term_at: int) -> list[tuple[int, str]]:
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        processes = []
        for index in range(2):
            task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            command = [sys.executable, "-c", TERM_WORKER_1, str(term_at), "train", "--preset", "smoke",
                       "--strategy", "multi_worker", "--run-dir", str(tmp_path / f"worker{index}"),
                       "--steps-per-epoch", "4", "--set", "data.validation_split=", "--batch-size", "4",
                       "--set", "train.backup_every=1000"]
            processes.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, "TF_CONFIG": json.dumps(task)},
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=900)[0] for p in processes]
        return [(p.returncode, out) for p, out in zip(processes, outputs)]

    stopped = run_workers(term_at=2)
    assert [code for code, _ in stopped] == [143, 143], "\n\n".join(out[-3000:] for _, out in stopped)
    (_, chief), (_, signalled) = stopped
    assert "stopped at epoch 1, batch 2 (step 2)" in chief and "another worker received SIGTERM" in chief
    assert "stopped at epoch 1, batch 2 (step 2)" in signalled and "s after the signal" in signalled
    resumed = run_workers(term_at=0)
    assert [code for code, _ in resumed] == [0, 0], "\n\n".join(out[-3000:] for _, out in resumed)
    assert all("resuming from the backup at epoch 1, batch 2 (step 2)" in out for _, out in resumed)
    models = [keras.saving.load_model(tmp_path / f"worker{i}" / "final.keras") for i in range(2)]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):  # the workers trained together
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(models[0].optimizer.iterations.numpy()) == 4
    assert len(models[0].get_weights()) == len(build_alexnet(10, init="he", input_scale=1 / 64).get_weights())


@pytest.mark.slow
def test_auto_takes_the_cached_choice_of_this_machine(demo_cache, tmp_path):
    # Fake timings in the cache say the graph path is 3x faster here: `--jit auto` must take it without a trial.
    from alexnet_tf.training import config as config_module
    from alexnet_tf.training import execution
    from alexnet_tf.training import loop as train

    config = config_module.preset("smoke").override({"train.jit_compile": "auto"})
    paths, _, trial = train.execution_trial(config, 10, None, 1)
    assert [p.precision for p in paths] == ["float32", "float32"]  # the smoke preset asks for float32
    cache = train.execution_cache()
    cache.put(execution.PathCache.key(trial, paths), {
        "measured": "2026-01-01 00:00",
        "seconds_per_step": {"float32 + XLA": 3.0, "float32 + graph": 1.0}})
    result = run_cli("train", "--preset", "smoke", "--jit", "auto", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "float32 + graph (images/s: float32 + graph 4.0, float32 + XLA 1.3; cached from 2026-01-01" in result.stdout
    assert "timing 2 candidates" not in result.stdout
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (saved["precision"], saved["jit_compile"]) == ("float32", "off")  # the run records what it ran
