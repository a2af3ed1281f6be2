"""What one crash-safe training backup costs: wall time and bytes for the paper's network (1000 classes, 60,965,224
parameters plus their momentum), against the training step it interrupts.

    python benchmarks/backup.py [--repeats 5] [--dir DIR]

Times `alexnet_tf.training.backup.Backups.save` (weights file written under a temporary name, fsync'd, renamed, then the
JSON commit and the old backup's deletion) and, for comparison, a bare `model.save_weights` in place (what Keras'
BackupAndRestore does, without fsync). Prints medians and writes benchmarks/results/backup.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", help="where to write the backups (default: a temporary folder on /tmp's disk)")
    args = parser.parse_args()

    import pathlib

    from alexnet_tf.network.model import build_alexnet
    from alexnet_tf.training.backup import Backups

    model = build_alexnet(1000, dropout=0.5)
    model.compile(jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        folder = pathlib.Path(folder)
        backups = Backups(folder / "checkpoints")
        safe, plain = [], []
        for step in range(args.repeats):
            model.optimizer.iterations.assign(step + 1)  # a new step each time: a full write, then a deletion
            started = time.perf_counter()
            metadata = backups.save(model, epoch=0, batch=step + 1)
            safe.append(time.perf_counter() - started)
            started = time.perf_counter()
            model.save_weights(folder / "in-place.weights.h5")
            plain.append(time.perf_counter() - started)
        size = metadata["bytes"]
    parameters = model.count_params()
    result = {
        "machine": common.machine(),
        "parameters": parameters,
        "bytes": size,
        "backup_seconds_median": round(statistics.median(safe), 3),
        "backup_seconds_all": [round(s, 3) for s in safe],
        "keras_in_place_seconds_median": round(statistics.median(plain), 3),
        "megabytes_per_second": round(size / statistics.median(safe) / 1e6, 1),
    }
    print(f"one backup: {size / 1e6:.1f} MB ({parameters:,} parameters + momentum + step and learning rate), "
          f"median {result['backup_seconds_median']:.2f} s ({result['megabytes_per_second']} MB/s) over "
          f"{args.repeats}; Keras' in-place save_weights, no fsync: {result['keras_in_place_seconds_median']:.2f} s")
    print(f"wrote {common.write_json('backup', result)}")


if __name__ == "__main__":
    main()
