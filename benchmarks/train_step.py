"""Images/second of one AlexNet training step (forward, backward, PaperSGD update) on a synthetic in-memory batch,
against the machine's measured matmul peak.

    python benchmarks/train_step.py [--batch 128] [--steps 5] [--precisions float32 mixed_bfloat16] [--no-xla]

Prints a table and writes benchmarks/results/train_step.json. Target (DESIGN.md section 7): float32 >= 75% of the
peak-derived bound (peak GFLOP/s / training GFLOP per image); mixed_bfloat16 >= 1.6x float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def step_rate(precision: str, batch: int, steps: int, xla: bool) -> dict:
    """Train `steps` timed steps through `model.fit` (the path `alexnet-tf train` takes) and return the median."""
    import keras
    import tensorflow as tf

    from alexnet_tf import build_alexnet

    keras.utils.set_random_seed(0)
    model = build_alexnet(1000, dtype=None if precision == "float32" else precision)
    model.compile(jit_compile=xla)
    images = tf.random.normal((batch, 224, 224, 3), stddev=50.0)
    labels = tf.random.uniform((batch,), 0, 1000, tf.int64)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()

    warmup = 2
    times = common.fit_step_times(model, data, steps, warmup)
    seconds = statistics.median(times[warmup:])
    return {"precision": precision, "xla": xla, "batch": batch, "step_s": round(seconds, 3),
            "first_step_s": round(times[0], 1), "images_per_s": round(batch / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision (median reported)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--no-xla", action="store_true", help="run the step without XLA (TF graph + oneDNN)")
    args = parser.parse_args()

    from alexnet_tf import build_alexnet

    peaks = {"float32": common.matmul_peak_gflops("float32"), "bfloat16": common.matmul_peak_gflops("bfloat16")}
    gflop = common.train_flops_per_image(build_alexnet(1000)) / 1e9
    rows = []
    for precision in args.precisions:
        row = step_rate(precision, args.batch, args.steps, xla=not args.no_xla)
        peak = peaks["bfloat16" if "bfloat16" in precision else "float32"]
        bound = peaks["float32"] / gflop  # the float32 bound is the yardstick for every precision
        row.update({"gflops_achieved": round(row["images_per_s"] * gflop, 1), "peak_gflops": round(peak, 1),
                    "fraction_of_fp32_bound": round(row["images_per_s"] / bound, 3)})
        rows.append(row)
    fp32 = next((r for r in rows if r["precision"] == "float32"), None)
    for row in rows:
        row["vs_float32"] = round(row["images_per_s"] / fp32["images_per_s"], 2) if fp32 else ""

    print(f"training GFLOP per image: {gflop:.3f}; matmul peak fp32 {peaks['float32']:.1f} GFLOP/s, "
          f"bf16 {peaks['bfloat16']:.1f} GFLOP/s; fp32 bound {peaks['float32'] / gflop:.1f} img/s")
    common.print_table(rows, ["precision", "xla", "batch", "step_s", "first_step_s", "images_per_s",
                              "gflops_achieved", "fraction_of_fp32_bound", "vs_float32"])
    path = common.write_json("train_step", {"machine": common.machine(), "train_gflop_per_image": gflop,
                                            "peak_gflops": peaks, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
