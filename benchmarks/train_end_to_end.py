"""Images/second of training from prepared shards with the full augmentation, against the same training step on a
synthetic in-memory batch, measured in one process.

    python benchmarks/train_end_to_end.py [--batch 128] [--steps 6]

Uses the demo set (made and prepared on first use). Target (DESIGN.md section 7): end-to-end >= 90% of the
synthetic-batch rate.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from alexnet_tf import build_alexnet
    from alexnet_tf.data import pipeline
    from alexnet_tf.data.sources import open_dataset
    from alexnet_tf.training.config import preset
    from alexnet_tf.training.execution import fit_step_times
    from alexnet_tf.training.loop import prepared_uri

    source = open_dataset(prepared_uri(preset("demo")), "train")
    stats, _ = pipeline.load_stats(source)
    keras.utils.set_random_seed(0)
    model = build_alexnet(source.num_classes)
    model.compile(jit_compile=True)
    real = pipeline.train_dataset(source, stats, args.batch).repeat()
    images = tf.random.normal((args.batch, 224, 224, 3), stddev=50.0)
    labels = tf.random.uniform((args.batch,), 0, source.num_classes, tf.int32)
    synthetic = tf.data.Dataset.from_tensors((images, labels)).repeat()
    rows = []
    for name, dataset in (("synthetic in-memory batch", synthetic), ("prepared shards, full augmentation", real),
                          ("synthetic in-memory batch (again)", synthetic)):
        seconds = statistics.median(fit_step_times(model, dataset, args.steps)[2:])
        rows.append({"input": name, "batch": args.batch, "step_s": round(seconds, 3),
                     "images_per_s": round(args.batch / seconds, 2)})
    synthetic_rate = statistics.mean([rows[0]["images_per_s"], rows[2]["images_per_s"]])
    ratio = rows[1]["images_per_s"] / synthetic_rate
    common.print_table(rows, ["input", "batch", "step_s", "images_per_s"])
    print(f"end-to-end / synthetic: {ratio:.1%} (target >= 90%)")
    print(f"wrote {common.write_json('train_end_to_end', {'machine': common.machine(), 'rows': rows, 'ratio': ratio})}")


if __name__ == "__main__":
    main()
