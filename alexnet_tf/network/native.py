"""The native LRN kernels (`kernels/*.cc`): compiled for this CPU on first use, cached, loaded as TensorFlow ops.

A training step's LRN is memory- and sqrt-bound; one C++ pass each way over the activations (`AlexnetLrn`,
`AlexnetLrnGrad`, the same float32 formula and window-sum order as `lrn.py`) is faster than the two XLA clusters
it replaces (mixed_bfloat16 step 179 -> 195 img/s on an AMX Xeon, `benchmarks/train_step.py`). The library is
built with the machine's compiler against the installed TensorFlow's headers (`tf.sysconfig`) and `-march=native`,
so it is keyed by the sources, the TensorFlow version, the compiler and the CPU's flags, and written under a
temporary name, then renamed: a build killed half-way never leaves a library that would be loaded. Without a
compiler, or with `ALEXNET_TF_NATIVE_OPS=0`, `lrn_ops()` is None and training keeps the XLA form (one warning).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
from types import ModuleType

from alexnet_tf.process import cache, cpu

log = logging.getLogger(__name__)

KERNELS = pathlib.Path(__file__).with_name("kernels")
SOURCES = ("lrn_rows.h", "lrn_rows.cc", "lrn_op.cc")
ROWS_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=off", "-fno-math-errno"]
"""The arithmetic kernel: the host's vector width; no FMA contraction and exact sqrt/division, so the rounding is
that of the Python forms (`-fno-math-errno` only lets sqrt vectorize)."""
BUILD_TIMEOUT_SECONDS = 600


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled or loaded here (the message says which step and why)."""


def _compiler() -> str:
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C++ compiler {compiler!r} on PATH (set CXX, or install g++)")
    return compiler


def _cpu_flags() -> str:
    """The kernel is built with -march=native: a library built on another CPU kind must not be reused."""
    import platform

    return " ".join(sorted(cpu.cpu_flags())) or platform.processor() or platform.machine()


def build_key(compiler: str) -> str:
    """What the library depends on: sources, TensorFlow, compiler version, CPU flags."""
    import tensorflow as tf

    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((KERNELS / name).read_bytes())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    for part in (tf.__version__, *tf.sysconfig.get_compile_flags(), *version, " ".join(ROWS_FLAGS), _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, step: str) -> None:
    try:
        _, stderr = process.communicate(timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        process.kill()
        raise NativeBuildError(f"{step} took over {BUILD_TIMEOUT_SECONDS} s") from error
    if process.returncode != 0:
        errors = [line for line in stderr.splitlines() if "error" in line] or stderr.splitlines()
        raise NativeBuildError(f"{step} failed (exit {process.returncode}): {' | '.join(errors[-3:])[:600]}")


def build(directory: pathlib.Path) -> pathlib.Path:
    """Compile the kernels into `directory/<key>/alexnet_lrn.so` unless already there; returns its path.

    The two sources compile at once (each takes ~6 s, one core each), then link."""
    import tensorflow as tf

    compiler = _compiler()
    library = directory / build_key(compiler) / "alexnet_lrn.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    log.info("alexnet-tf: compiling the native LRN kernels for this CPU into %s (once, a few seconds)", library.parent)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as scratch:
        rows, op = pathlib.Path(scratch) / "lrn_rows.o", pathlib.Path(scratch) / "lrn_op.o"
        compiling = {
            "compiling lrn_rows.cc": _start([compiler, "-c", "-fPIC", *ROWS_FLAGS, str(KERNELS / "lrn_rows.cc"),
                                             "-o", str(rows)]),
            "compiling lrn_op.cc": _start([compiler, "-c", "-fPIC", "-O2", "-w", str(KERNELS / "lrn_op.cc"),
                                           "-o", str(op), *tf.sysconfig.get_compile_flags()]),
        }
        try:
            for step, process in compiling.items():
                _finish(process, step)
        finally:
            for process in compiling.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        partial = pathlib.Path(scratch) / "alexnet_lrn.so"
        _finish(_start([compiler, "-shared", str(op), str(rows), "-o", str(partial), *tf.sysconfig.get_link_flags()]),
                "linking alexnet_lrn.so")
        os.replace(partial, library)
    return library


def cache_directory() -> pathlib.Path:
    return cache.cache_root() / "native-ops"


@functools.cache
def lrn_ops() -> ModuleType | None:
    """The loaded op module (`alexnet_lrn`, `alexnet_lrn_grad`), or None where it cannot be built (logged once);
    AlexnetLrn's gradient is registered as it loads."""
    if os.environ.get("ALEXNET_TF_NATIVE_OPS", "1") == "0":
        return None
    import tensorflow as tf

    try:
        library = build(cache_directory())
        try:
            module = tf.load_op_library(str(library))
        except (tf.errors.NotFoundError, OSError) as error:  # a damaged cache entry: rebuild it once
            library.unlink(missing_ok=True)
            try:
                module = tf.load_op_library(str(build(cache_directory())))
            except (tf.errors.NotFoundError, OSError):
                raise NativeBuildError(f"loading {library} failed: {error}") from error
        _register_gradient(module)
        return module
    except NativeBuildError as error:
        log.warning("alexnet-tf: the native LRN kernel is not available (%s); training uses the XLA form of LRN, "
                    "about 8%% slower", error)
        return None


def lrn_gradient(module: ModuleType, op, upstream):
    """AlexnetLrn's gradient: AlexnetLrnGrad on the op's input and attributes, in the op's name scope, so that
    AlexNet's gradient placement (by scope) puts it on the tower's device as it does the other gradient ops."""
    import tensorflow as tf

    attributes = {name: op.get_attr(name) for name in ("depth_radius", "bias", "alpha", "beta", "relu")}
    if tf.executing_eagerly():
        return module.alexnet_lrn_grad(op.inputs[0], upstream, **attributes)
    # The tape hands a stand-in for the op (no name): its output tensor names the forward op.
    with tf.name_scope(op.outputs[0].op.name.rpartition("/")[0] + "/"):
        return module.alexnet_lrn_grad(op.inputs[0], upstream, **attributes)


def _register_gradient(module: ModuleType) -> None:
    """Register `lrn_gradient` for the op type, once per process: a `tf.custom_gradient` would register a new
    gradient in TensorFlow's process-wide registry for every trace, and with it keep every traced training step
    and the model variables it captures alive until the process ends."""
    import tensorflow as tf

    try:
        tf.RegisterGradient("AlexnetLrn")(functools.partial(lrn_gradient, module))
    except KeyError:  # registered by an earlier load in this process
        pass
