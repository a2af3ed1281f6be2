"""Shared benchmark helpers: the machine's measured matmul peak, FLOP counts from layer shapes, tables, JSON."""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `run()` over `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(dtype: str = "float32", sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
    """The best median GFLOP/s of square matmuls on this machine, all cores (the 'peak' our ratios divide by)."""
    import tensorflow as tf

    best = 0.0
    matmul = tf.function(tf.matmul)
    for n in sizes:
        a = tf.cast(tf.random.normal((n, n)), dtype)
        b = tf.cast(tf.random.normal((n, n)), dtype)
        seconds = median_seconds(lambda a=a, b=b: matmul(a, b).numpy(), repeats)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def forward_flops(model) -> dict[str, int]:
    """Multiply-adds x 2 of every Conv2D and Dense layer for one image, from the layers' shapes."""
    import keras

    flops = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            flops[layer.name] = 2 * h * w * cout * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            flops[layer.name] = 2 * cin * cout
    return flops


def train_flops_per_image(model) -> int:
    """Forward + backward FLOPs of one image: 3x forward (input and weight gradients), except conv1's input
    gradient, which nothing needs."""
    flops = forward_flops(model)
    first = sum(f for name, f in flops.items() if name.startswith("conv1"))
    return 3 * sum(flops.values()) - first


def machine() -> dict:
    """What the numbers were measured on: the CPU's model name and the flags that decide TensorFlow's kernels."""
    import tensorflow as tf

    from alexnet_tf.training import execution

    return {
        "cpu": execution.cpu_model(),
        "flags": sorted(execution.cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                  "amx_tile"}),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def write_json(name: str, payload: dict) -> pathlib.Path:
    """Write results/<name>.json atomically (temporary name, then rename)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
