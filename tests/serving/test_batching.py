"""Server-side batching (serving/batching.py): TF Serving's configuration file and queueing semantics, on a fake
model whose batches are recorded."""

import concurrent.futures
import pathlib
import threading
import time

import grpc
import numpy as np
import pytest

from serving.batching import Batcher, BatchingFailure, BatchingParameters

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, batch_size", [("batching.config", 8), ("batching_bfloat16.config", 16)])
def test_the_shipped_batching_configs_parse_as_tf_serving_reads_them(name, batch_size):
    parameters = BatchingParameters.read(ROOT / "serving" / name)
    assert (parameters.max_batch_size, parameters.batch_timeout_micros, parameters.max_enqueued_batches,
            parameters.num_batch_threads) == (64, 10000, 64, 2)
    assert parameters.enable_large_batch_splitting and parameters.batch_size == batch_size
    assert parameters.allowed_batch_sizes == ()  # no padding on a CPU (see the file's comments)


@pytest.mark.parametrize("text, says", [
    ("max_batch_size: 8", "max_batch_size"),  # a wrapper message, not a scalar
    ("max_batch_sise { value: 8 }", "max_batch_sise"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must equal max_batch_size"),
    ("max_batch_size { value: 8 } max_execution_batch_size { value: 9 } enable_large_batch_splitting { value: true }",
     "max_execution_batch_size must be between 1 and max_batch_size"),
    ("max_batch_size { value: 64 } max_execution_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
     "allowed_batch_sizes: 4", "must equal max_execution_batch_size"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1"),
])
def test_bad_batching_configs_name_the_problem(text, says):
    with pytest.raises(ValueError, match=says):
        BatchingParameters.parse(text)


class Recorder:
    """A fake signature: outputs 2x its input; records every batch's size and may block until released."""

    def __init__(self):
        self.sizes, self.release, self.entered = [], threading.Event(), threading.Event()
        self.release.set()

    def __call__(self, inputs):
        self.entered.set()
        self.release.wait()
        self.sizes.append(len(inputs["x"]))
        if np.any(inputs["x"] < 0):
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}


def submit_all(batcher, run, sizes, key="k"):
    with concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool:
        inputs = [np.arange(10 * i, 10 * i + n, dtype=np.float32) for i, n in enumerate(sizes)]
        futures = [pool.submit(batcher.submit, key, run, {"x": x}) for x in inputs]
        return inputs, [f.result() for f in futures]


def test_concurrent_requests_are_merged_padded_and_split_back():
    run = Recorder()
    batcher = Batcher(BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1,
                                         allowed_batch_sizes=(2, 4, 8)))
    try:
        inputs, outputs = submit_all(batcher, run, [1, 3, 2, 1, 2, 3])
    finally:
        batcher.stop()
    for x, out in zip(inputs, outputs):
        np.testing.assert_array_equal(out["y"], x * 2)  # each request gets exactly its own rows back
    assert sum(run.sizes) >= 12 and len(run.sizes) < 6  # merged into fewer runs than requests
    assert set(run.sizes) <= {2, 4, 8}  # padded up to allowed sizes


def test_a_request_larger_than_max_batch_size_is_refused_or_split():
    run = Recorder()
    refusing = Batcher(BatchingParameters(max_batch_size=4))
    with pytest.raises(BatchingFailure) as refused:
        refusing.submit("k", run, {"x": np.zeros(9, np.float32)})
    refusing.stop()
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "larger than maximum" in refused.value.message

    # With splitting, as TF Serving: max_batch_size caps a request, max_execution_batch_size a batch run.
    splitting = Batcher(BatchingParameters(max_batch_size=16, max_execution_batch_size=4,
                                           enable_large_batch_splitting=True))
    x = np.arange(9, dtype=np.float32)
    np.testing.assert_array_equal(splitting.submit("k", run, {"x": x})["y"], x * 2)
    with pytest.raises(BatchingFailure, match="Task size 17 is larger than maximum input batch size 16"):
        splitting.submit("k", run, {"x": np.zeros(17, np.float32)})
    splitting.stop()
    assert run.sizes == [4, 4, 1]


@pytest.mark.parametrize("rows, batches", [(6, [4, 4, 1]), (2, [4, 1])])
def test_a_request_that_does_not_fit_first_fills_the_open_batch(rows, batches):
    run = Recorder()
    batcher = Batcher(BatchingParameters(max_batch_size=16, max_execution_batch_size=4, batch_timeout_micros=2_000_000,
                                         num_batch_threads=1, enable_large_batch_splitting=True))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            small = pool.submit(batcher.submit, "k", run, {"x": np.arange(3, dtype=np.float32)})
            wait_until(lambda: "k" in batcher._queues)  # the 3 rows wait in the open batch
            large = batcher.submit("k", run, {"x": np.arange(10, 10 + rows, dtype=np.float32)})
            np.testing.assert_array_equal(small.result()["y"], np.arange(3) * 2)
        np.testing.assert_array_equal(large["y"], np.arange(10, 10 + rows) * 2)
    finally:
        batcher.stop()
    assert run.sizes == batches  # 3 + the first row of the second request; then the rest in batches of 4


def wait_until(condition, seconds: float = 10.0) -> None:
    """Poll `condition` (a state another thread reaches) instead of sleeping a fixed time; fail if it never holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the batcher never reached the expected state"
        time.sleep(0.005)


def test_a_full_queue_answers_unavailable():
    run = Recorder()
    run.release.clear()  # the batch thread blocks inside the first batch
    batcher = Batcher(BatchingParameters(max_batch_size=1, max_enqueued_batches=2, num_batch_threads=1))
    pool = concurrent.futures.ThreadPoolExecutor(3)
    try:
        waiting = [pool.submit(batcher.submit, "k", run, {"x": np.ones(1, np.float32)})]
        assert run.entered.wait(10)  # one batch running...
        waiting += [pool.submit(batcher.submit, "k", run, {"x": np.ones(1, np.float32)}) for _ in range(2)]
        wait_until(lambda: len(batcher._queues["k"].batches) == 2)  # ...and two queued: the queue is full
        with pytest.raises(BatchingFailure) as full:
            batcher.submit("k", run, {"x": np.ones(1, np.float32)})
        assert full.value.code == grpc.StatusCode.UNAVAILABLE
        run.release.set()
        assert all(f.result(timeout=10)["y"][0] == 2 for f in waiting)
    finally:
        run.release.set()
        batcher.stop()
        pool.shutdown()


def test_queues_are_separate_per_key_and_a_failed_batch_fails_every_request_in_it():
    """As TF Serving's BatchingSession: one bad request fails the batch it joined (the three v1 requests fill one
    batch of 6 rows), and only that batch (v2 is its own queue)."""
    runs = {"v1": Recorder(), "v2": Recorder()}
    batcher = Batcher(BatchingParameters(max_batch_size=6, batch_timeout_micros=1_000_000, num_batch_threads=2))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher.submit, key, runs[key], {"x": np.full(2, value, np.float32)})
                   for key, value in (("v1", 1), ("v2", 2), ("v1", -1), ("v2", 3), ("v1", 4))]
        results = []
        for future in futures:
            try:
                results.append(float(future.result()["y"][0]))
            except ValueError as error:
                results.append(str(error))
    batcher.stop()
    assert results == ["negative input", 4.0, "negative input", 6.0, "negative input"]
    assert all(size % 2 == 0 for run in runs.values() for size in run.sizes)  # v1 and v2 rows never mixed
