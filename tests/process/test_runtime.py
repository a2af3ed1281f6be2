"""Runtime defaults: importing alexnet_tf switches TensorFlow to the BFC CPU allocator, unless the user chose."""

import os
import subprocess
import sys

PROBE = """
import os, alexnet_tf, tensorflow as tf
tf.zeros([256, 256])
try:
    tf.config.experimental.get_memory_info("CPU:0")  # only a BFC allocator keeps these statistics
    print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), "bfc")
except ValueError:
    print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), "default")
"""


def probe(**env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                            env={**environment, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_importing_alexnet_tf_turns_on_the_bfc_cpu_allocator():
    assert probe() == "true bfc"


def test_the_users_choice_wins():
    # What the project controls is the variable: a user's value reaches TensorFlow untouched. Which allocator
    # TensorFlow then picks for "false" is its own business and differs by CPU (with oneDNN on an avx512_bf16
    # EPYC it still reported BFC statistics), so only the variable is checked here.
    assert probe(TF_CPU_ALLOCATOR_USE_BFC="false").split()[0] == "false"


def test_nothing_is_set_once_tensorflow_is_imported(monkeypatch):
    import tensorflow  # noqa: F401

    from alexnet_tf.process import runtime

    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    assert runtime.configure() == {}
    assert "TF_CPU_ALLOCATOR_USE_BFC" not in os.environ
