"""Images/second of one AlexNet training step (forward, backward, PaperSGD update) on a synthetic in-memory batch, for
every execution path (float32 / mixed_bfloat16 x XLA / graph), against the bounds from the machine's matmul peaks.

    python benchmarks/train_step.py [--batch 128] [--steps 5] [--repeats 1]

Marks the path `alexnet-tf train --precision auto --jit auto` picks here (`alexnet_tf.training.execution.pick` over the
candidates this hardware offers natively; the bfloat16 rows of a CPU without avx512_bf16/AMX are measured but are no
candidates), then profiles that path (TensorFlow's profiler, `benchmarks/op_profile.py`) and prints its ten costliest
op types with their share of the op time. The graph paths are also measured without the training forms of
conv1/conv2 (`alexnet_tf.network.training_forms`: ReLU inside the native LRN, conv1 over space-to-depth blocks in
bf16 on AMX), rows "form": "layers", interleaved with the rest. Prints a table and writes
benchmarks/results/train_step.json. Targets (DESIGN.md section 8): the default >= 0.95 x the fastest candidate;
>= 0.80 of the fp32 bound on AVX2-only CPUs; >= 0.70 of the bf16 bound with native bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


@contextlib.contextmanager
def compiled_model(path, batch: int):
    """(model, data) for `path`: a 1000-class AlexNet compiled as `alexnet-tf train` compiles it, and a synthetic
    batch repeated; the policy and Keras' state are reset afterwards."""
    import keras
    import tensorflow as tf

    from alexnet_tf import build_alexnet

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(path.precision)
    try:
        model = build_alexnet(1000, dtype=path.precision)
        model.compile(jit_compile=path.xla)
        images = tf.random.normal((batch, 224, 224, 3), stddev=50.0)
        labels = tf.random.uniform((batch,), 0, 1000, tf.int64)
        yield model, tf.data.Dataset.from_tensors((images, labels)).repeat()
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def step_seconds(path, batch: int, steps: int, forms: bool = True) -> list[float]:
    """Seconds of each timed step of `path` through `model.fit` (the path `alexnet-tf train` takes); without
    `forms`, the graph step runs conv1/conv2 and their LRN as the layers are built."""
    from alexnet_tf.network.training_forms import TrainingForms
    from alexnet_tf.training.execution import fit_step_times

    warmup = 2
    with compiled_model(path, batch) as (model, data):
        if not forms:
            model.training_forms = TrainingForms()
        return fit_step_times(model, data, steps, warmup)[warmup:]


def op_breakdown(path, batch: int, steps: int = 3, count: int = 10) -> list[dict]:
    """The `count` op types `path`'s training step spends the most time in, per step, from a profiler trace."""
    from benchmarks import op_profile

    with compiled_model(path, batch) as (model, data):
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # traced, compiled and warm before the trace
        with op_profile.trace() as trace:
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    trace.runs = steps
    return trace.top(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path (median reported)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every path this many times, interleaved (the median of all steps is reported)")
    args = parser.parse_args()

    from alexnet_tf import build_alexnet
    from alexnet_tf.network import native as native_ops
    from alexnet_tf.training import execution

    peaks = {"float32": common.matmul_peak_gflops("float32"), "bfloat16": common.matmul_peak_gflops("bfloat16")}
    gflop = common.train_flops_per_image(build_alexnet(1000)) / 1e9
    bounds = {name: peak / gflop for name, peak in peaks.items()}
    native = execution.native_mixed_precisions()
    paths = execution.candidates("auto", "auto", mixed=("mixed_bfloat16",))
    lrn = "native" if native_ops.lrn_ops() is not None else "xla-clusters"
    compared = [path for path in paths if not path.xla]  # also run without the training forms
    times: dict = {path: [] for path in paths}
    before: dict = {path: [] for path in compared}
    for _ in range(args.repeats):  # interleaved, so a slow spell of a shared machine hits every path alike
        for path in paths:
            times[path] += step_seconds(path, args.batch, args.steps)
            if path in before:
                before[path] += step_seconds(path, args.batch, args.steps, forms=False)
    seconds = {path: statistics.median(t) for path, t in times.items()}
    considered = {p: s for p, s in seconds.items() if p.precision == "float32" or p.precision in native}
    default = execution.pick(considered)
    fastest = min(considered, key=considered.get)

    rows = []
    measured = [(path, seconds[path], "xla" if path.xla else "forms") for path in paths]
    measured += [(path, statistics.median(t), "layers") for path, t in before.items()]
    for path, step, form in measured:
        rate = args.batch / step
        bound = bounds["bfloat16" if "bfloat16" in path.precision else "float32"]
        rows.append({"precision": path.precision, "xla": path.xla, "lrn": "xla" if path.xla else lrn,
                     "form": form, "images_per_s": round(rate, 2), "step_s": round(step, 3),
                     "candidate": path in considered and form != "layers",
                     "default": path == default and form != "layers",
                     "fraction_of_fp32_bound": round(rate / bounds["float32"], 3),
                     "fraction_of_own_bound": round(rate / bound, 3)})
    print(f"CPU: {execution.cpu_model()}, {common.machine()['cores']} cores, flags: "
          f"{' '.join(common.machine()['flags']) or '-'}")
    print(f"training GFLOP per image: {gflop:.3f}; matmul peak fp32 {peaks['float32']:.1f} GFLOP/s, bf16 "
          f"{peaks['bfloat16']:.1f} GFLOP/s; fp32 bound {bounds['float32']:.1f} img/s, bf16 bound "
          f"{bounds['bfloat16']:.1f} img/s" + ("" if native else " (no native bf16 here: emulated)"))
    common.print_table(rows, ["precision", "xla", "lrn", "form", "images_per_s", "step_s", "candidate", "default",
                              "fraction_of_fp32_bound", "fraction_of_own_bound"])
    ratio = seconds[fastest] / seconds[default]
    print(f"default ({default.label}) = {ratio:.3f} x the fastest candidate ({fastest.label}); target >= 0.95")
    breakdown = op_breakdown(default, args.batch)
    print("where the default path's step goes (op types by their share of the op time; XLA fuses ops into "
          "clusters, so its rows are fusions): ")
    common.print_table(breakdown, ["op", "ms_per_run", "share"])
    path = common.write_json("train_step", {"machine": common.machine(), "train_gflop_per_image": gflop,
                                            "peak_gflops": peaks, "bounds_images_per_s": bounds,
                                            "batch": args.batch, "default_vs_fastest": round(ratio, 3),
                                            "rows": rows, "default_path_ops": breakdown})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
