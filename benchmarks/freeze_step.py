"""Images/second of a fine-tuning step with and without frozen layers (`--freeze conv`, `--freeze conv,fc6`), on the
execution path `alexnet-tf train` picks for the finetune preset on this machine.

    python benchmarks/freeze_step.py [--batch 32] [--steps 5] [--repeats 3]

Frozen layers need no weight gradients and no update, and with conv1-conv5 frozen nothing back-propagates below fc6.
Prints a table and writes benchmarks/results/freeze_step.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements of each setting")
    args = parser.parse_args()

    from alexnet_tf.training import execution
    from alexnet_tf.training.config import preset
    from alexnet_tf.training.loop import _build_model, choose_execution_path

    base = preset("finetune").override({"train.batch_size": args.batch, "train.init_from": "(benchmark)"})
    path = choose_execution_path(base, 8, None, 1).path
    settings = ["", "conv", "conv,fc6"]
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name in settings:
            config = base.override({"train.freeze": name})
            seconds[name].append(execution.time_path(path, lambda p, c=config: _build_model(c, 8, None, p),
                                                     args.batch, steps=args.steps, num_classes=8))
    rows = []
    for name in settings:
        step = statistics.median(seconds[name])
        rows.append({"freeze": name or "(none)", "path": path.label, "batch": args.batch, "step_s": round(step, 3),
                     "images_per_s": round(args.batch / step, 1)})
    for row in rows:
        row["speed_vs_none"] = round(row["images_per_s"] / rows[0]["images_per_s"], 2)
    print(f"CPU: {common.machine()['cpu']}, flags: {' '.join(common.machine()['flags'])}")
    common.print_table(rows, ["freeze", "path", "batch", "step_s", "images_per_s", "speed_vs_none"])
    print(f"wrote {common.write_json('freeze_step', {'machine': common.machine(), 'rows': rows})}")


if __name__ == "__main__":
    main()
