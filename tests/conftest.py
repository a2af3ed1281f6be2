"""Shared pytest set-up: quiet TensorFlow logs, fixed seeds, and small fixtures reused across test modules."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import alexnet_tf  # noqa: E402, F401  (first: its TensorFlow runtime defaults apply before TensorFlow loads)

# isort: split
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Every test starts from the same seeds and the float32 policy, whatever the previous test set."""
    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


import collections  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """Files with the most `slow` tests first, each file's tests in their own order: pyproject's addopts split the
    suite between two workers file by file, in this order, so the longest files start first and the two workers
    finish close together."""
    slow = collections.Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A private cache holding a tiny demo set where `demo` looks for it, so `--data demo` is fast and offline."""
    from alexnet_tf.data import demo

    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("ALEXNET_TF_CACHE")
    os.environ["ALEXNET_TF_CACHE"] = str(cache)
    demo.ensure_demo(per_class={"train": 8, "validation": 3}, progress=False)
    yield cache
    if previous is None:
        os.environ.pop("ALEXNET_TF_CACHE", None)
    else:
        os.environ["ALEXNET_TF_CACHE"] = previous


@pytest.fixture(scope="module")
def module_tmp_path(request, tmp_path_factory):
    """A directory shared by one test module's tests, deleted when the module ends: full-size AlexNet runs and
    exports are 0.2-1.3 GB each, so keeping every module's until the session ends could fill a CI disk."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `alexnet-tf ARGS` in a fresh process (the console script's own module) and capture its output."""
    return subprocess.run([sys.executable, "-m", "alexnet_tf.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


@pytest.fixture(scope="session")
def smoke_run(demo_cache, tmp_path_factory):
    """A run directory from `alexnet-tf train --preset smoke` on the tiny demo set (a few steps), with the progress
    lines a log gets every 30 s at every step."""
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    result = run_cli("train", "--preset", "smoke", "--run-dir", str(run_dir), "--set", "train.log_seconds=1e-9")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return run_dir, result.stdout
