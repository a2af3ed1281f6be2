"""How `alexnet-tf train` runs its step on this machine: precision x (XLA or graph), chosen by a timed trial.

Which path is fastest depends on the CPU, not on the code: on a 2-core AVX2 EPYC, float32 with XLA won (29 vs 20-24
img/s for the graph path); on a 2-core AVX-512 EPYC with native bf16, the graph path (oneDNN) won and its bfloat16
was 1.48x its float32, while XLA's bfloat16 gained nothing. CPU flags alone cannot tell that, so `auto` runs a few
steps of each candidate once per machine, keeps the timings in the cache directory, and picks the fastest.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Sequence

from alexnet_tf.process import atomic
from alexnet_tf.process.cpu import cpu_flags

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_CHOICES = ("auto", "on", "off")
FLOAT32_PREFERENCE = 0.03
"""float32 is kept when a mixed-precision path is less than 3% faster: the paper's arithmetic for nearly free."""


@dataclasses.dataclass(frozen=True)
class ExecutionPath:
    """One way to run the training step: a Keras dtype policy and whether the step is XLA-compiled."""

    precision: str
    xla: bool

    @property
    def label(self) -> str:
        return f"{self.precision} + {'XLA' if self.xla else 'graph'}"

    @classmethod
    def from_label(cls, label: str) -> ExecutionPath:
        precision, _, mode = label.partition(" + ")
        return cls(precision, mode == "XLA")


# === What the hardware offers ===
def cpu_model() -> str:
    """The CPU's model name (`lscpu`'s "Model name"), or the platform's processor string."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_mixed_precisions(*, gpu_capabilities: Sequence[tuple[int, int]] | None = None,
                            flags: set[str] | None = None) -> tuple[str, ...]:
    """The mixed precisions this host computes natively, as TensorFlow recommends them.

    GPUs: float16 from compute capability 7.0 (tensor cores), bfloat16 from 8.0. CPUs: bfloat16 with avx512_bf16 or
    AMX; without them TensorFlow emulates bfloat16 in float32 and only loses time.
    """
    if gpu_capabilities is None:
        gpu_capabilities = _gpu_capabilities()
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        return (("mixed_float16",) if oldest >= (7, 0) else ()) + (("mixed_bfloat16",) if oldest >= (8, 0) else ())
    flags = cpu_flags() if flags is None else flags
    return ("mixed_bfloat16",) if flags & {"avx512_bf16", "amx_bf16"} else ()


def native_bfloat16() -> bool:
    """True where this CPU computes bfloat16 natively (avx512_bf16 or AMX): where a bfloat16 export serves faster."""
    return "mixed_bfloat16" in native_mixed_precisions(gpu_capabilities=[])


def _gpu_capabilities() -> list[tuple[int, int]]:
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


def machine_key() -> dict:
    """What a cached choice is valid for: the CPU model, its core count, the GPUs, TensorFlow's version and whether
    the graph path's LRN is the native kernel and which training forms its conv1/conv2 take (they change which
    path wins)."""
    import tensorflow as tf

    from alexnet_tf.network import native, space_to_depth

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "graph_lrn": "native, relu inside" if native.lrn_ops() is not None else "xla-clusters",
        "graph_conv1_bfloat16": "space-to-depth" if space_to_depth.helps("bfloat16") else "strided",
    }


def candidates(precision: str, jit: str, *, mixed: Sequence[str], xla_allowed: bool = True) -> list[ExecutionPath]:
    """The paths to try: `precision` "auto" means float32 and every native mixed precision, `jit` "auto" both
    XLA and graph; anything else is taken as given. XLA is dropped where it cannot run (several replicas)."""
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {precision!r}")
    if jit not in JIT_CHOICES:
        raise ValueError(f"jit must be one of {JIT_CHOICES}, got {jit!r}")
    precisions = ["float32", *mixed] if precision == "auto" else [precision]
    modes = {"auto": [True, False], "on": [True], "off": [False]}[jit]
    if not xla_allowed:
        modes = [False]
    return [ExecutionPath(p, x) for p in precisions for x in modes]


# === Choosing ===
def pick(seconds_per_step: dict[ExecutionPath, float]) -> ExecutionPath:
    """The fastest path; float32 stays when the fastest mixed-precision path is less than 3% faster."""
    if not seconds_per_step:
        raise ValueError("no timings to pick from")
    fastest = min(seconds_per_step, key=seconds_per_step.get)
    float32 = [p for p in seconds_per_step if p.precision == "float32"]
    if float32 and fastest.precision != "float32":
        best_float32 = min(float32, key=seconds_per_step.get)
        if seconds_per_step[best_float32] <= seconds_per_step[fastest] * (1 + FLOAT32_PREFERENCE):
            return best_float32
    return fastest


def fit_step_times(model, dataset, steps: int, warmup: int = 2) -> list[float]:
    """Seconds of each `model.fit` step of one epoch of `warmup + steps` steps (the first `warmup` include
    tracing and compilation): the path `alexnet-tf train` takes, callbacks and all."""
    import keras

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[Timer()], shuffle=False)
    return times


def time_path(path: ExecutionPath, build: Callable[[ExecutionPath], object], batch_size: int, *,
              steps: int = 3, warmup: int = 2, image_size: int = 224, num_classes: int = 1000) -> float:
    """Median seconds per training step of `path` on a synthetic batch; `build(path)` returns a compiled model.

    The model and everything it allocated are released afterwards, so trials do not pile up in memory.
    """
    import keras
    import tensorflow as tf

    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy(path.precision)
        model = build(path)
        images = tf.random.normal((batch_size, image_size, image_size, 3), stddev=50.0)
        labels = tf.random.uniform((batch_size,), 0, num_classes, tf.int64)
        data = tf.data.Dataset.from_tensors((images, labels)).repeat()
        times = fit_step_times(model, data, steps, warmup)
        return statistics.median(times[warmup:])
    finally:
        keras.mixed_precision.set_global_policy(previous)
        model = data = None
        keras.backend.clear_session()
        gc.collect()


@dataclasses.dataclass
class Choice:
    """The path to train with, and why: the timings it was picked from (empty when nothing was measured)."""

    path: ExecutionPath
    seconds_per_step: dict[ExecutionPath, float]
    cached: bool = False
    measured: str = ""

    def describe(self, batch_size: int) -> str:
        if len(self.seconds_per_step) < 2:
            return self.path.label
        rates = ", ".join(f"{p.label} {batch_size / s:.1f}" for p, s in
                          sorted(self.seconds_per_step.items(), key=lambda item: item[1]))
        origin = f"cached from {self.measured}" if self.cached else "measured now"
        return f"{self.path.label} (images/s: {rates}; {origin})"


class PathCache:
    """Trial timings per machine and trial (batch size, model, candidates), in one JSON file."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    @staticmethod
    def key(trial: dict, paths: Sequence[ExecutionPath]) -> str:
        """The entry of this machine, this trial and these candidates."""
        text = json.dumps({"machine": machine_key(), **trial, "paths": [p.label for p in paths]}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def _entries(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # no cache yet, or a damaged one: measure again
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> dict | None:
        return self._entries().get(key)

    def put(self, key: str, entry: dict) -> None:
        entries = self._entries()
        entries[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path, json.dumps(entries, indent=2) + "\n")


def choose(paths: Sequence[ExecutionPath], measure: Callable[[ExecutionPath], float], *,
           cache: PathCache | None = None, trial: dict | None = None,
           report: Callable[[str], None] = print) -> Choice:
    """Pick among `paths`: the only one, the cached timings of an earlier trial, or a trial now (`measure(path)`
    returns seconds per step), whose timings are then cached."""
    if len(paths) == 1:
        return Choice(paths[0], {})
    key = PathCache.key(trial or {}, paths) if cache else ""
    entry = cache.get(key) if cache else None
    if entry:
        try:
            timings = {ExecutionPath.from_label(label): float(s) for label, s in entry["seconds_per_step"].items()}
            if set(timings) == set(paths):
                return Choice(pick(timings), timings, cached=True, measured=entry.get("measured", ""))
        except (KeyError, TypeError, ValueError):
            pass  # an entry of another shape: measure again
    where = f" (once for this machine; cached in {cache.path})" if cache else ""
    report(f"choosing the training path: timing {len(paths)} candidates{where}")
    timings = {}
    for index, path in enumerate(paths, 1):
        report(f"  [{index}/{len(paths)}] {path.label} ...")
        timings[path] = measure(path)
        report(f"  [{index}/{len(paths)}] {path.label}: {timings[path]:.2f} s/step")
    choice = Choice(pick(timings), timings, measured=time.strftime("%Y-%m-%d %H:%M"))
    if cache:
        cache.put(key, {"machine": machine_key(), **(trial or {}), "measured": choice.measured,
                        "seconds_per_step": {p.label: round(s, 4) for p, s in timings.items()},
                        "pick": choice.path.label})
    return choice
