"""The served Session's thread pools: TF Serving's --tensorflow_*_op_parallelism flags, and our auto rule."""

import os

import pytest

from serving.batching import BatchingParameters
from serving.server import ServerOptions, session_config

CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("options, runs", [
    (ServerOptions(max_concurrent=2), 2),
    (ServerOptions(max_concurrent=1), 1),
    (ServerOptions(max_concurrent=1, batching=BatchingParameters(num_batch_threads=4)), 4),
    (ServerOptions(max_concurrent=3, batching=BatchingParameters(num_batch_threads=1)), 1),
])
def test_auto_intra_op_threads_share_the_cores_between_concurrent_runs(options, runs):
    assert options.concurrent_runs == runs
    config = session_config(options)
    assert config.intra_op_parallelism_threads == max(1, CORES // runs)
    assert config.inter_op_parallelism_threads == 0  # TensorFlow's own choice


def test_explicit_thread_counts_win():
    config = session_config(ServerOptions(intra_op_threads=3, inter_op_threads=5))
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 5)


def test_the_thread_flags_resolve_as_tf_serving_resolves_them():
    from alexnet_tf.cli import tf_serving_flags
    from alexnet_tf.cli.common import UserError
    from alexnet_tf.cli.serve_flags import threads

    parse = tf_serving_flags.parse
    assert threads(parse(["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2"])) == (1, 2)
    assert threads(parse(["--tensorflow_session_parallelism=3"])) == (3, 3)  # both pools, as server.cc
    assert threads(parse([])) == (0, 0)
    with pytest.raises(UserError, match="--tensorflow_intra_op_parallelism=-1: expected 0 .auto. or a thread"):
        threads(parse(["--tensorflow_intra_op_parallelism=-1"]))
    with pytest.raises(UserError, match="You cannot configure all"):
        threads(parse(["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
                       "--tensorflow_session_parallelism=1"]))
