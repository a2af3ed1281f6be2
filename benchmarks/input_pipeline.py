"""Images/second of the training input pipeline (full paper augmentation, batch 128) from prepared 256x256 shards
and from raw variable-size JPEGs, on the demo images.

    python benchmarks/input_pipeline.py [--epochs 5] [--repeat 4] [--batch 128]

Prints a table and writes benchmarks/results/input_pipeline.json. Target (DESIGN.md section 7): >= 1,500 img/s on
2 cores from prepared shards.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def write_raw_shards(source_uri: str, out: pathlib.Path, shards: int = 8) -> None:
    """The source's original JPEG files as TFRecords, not resized (like tensorflow/models' ImageNet shards)."""
    import json

    import tensorflow as tf

    from alexnet_tf.data import records
    from alexnet_tf.data.sources import open_dataset

    source = open_dataset(source_uri, "train")
    examples = list(source.examples())
    for index in range(shards):
        with tf.io.TFRecordWriter(str(out / records.shard_name("train", index, shards))) as writer:
            for example in examples[index::shards]:
                writer.write(records.encode_example(example.data, example.label, height=0, width=0))
    (out / "manifest.json").write_text(json.dumps({"classes": source.classes, "label_offset": 0}))


def rate(uri: str, batch: int, epochs: int, repeat: int) -> dict:
    """Median images/second over `epochs` full passes (after one warm-up pass) of the shards listed `repeat` times,
    so a pass lasts seconds and its start (filling the shuffle buffer, ~0.2 s) weighs as little as it would in an
    ImageNet epoch."""
    import dataclasses

    from alexnet_tf.data import pipeline
    from alexnet_tf.data.sources import open_dataset

    source = open_dataset(uri, "train")
    source = dataclasses.replace(source, files=source.files * repeat)
    stats, _ = pipeline.load_stats(source)
    dataset = pipeline.train_dataset(source, stats, batch)
    rates = []
    for epoch in range(epochs + 1):
        start, images = time.perf_counter(), 0
        for _, labels in dataset:
            images += int(labels.shape[0])
        if epoch:
            rates.append(images / (time.perf_counter() - start))
    return {"images_per_epoch": images, "images_per_s": round(statistics.median(rates), 1),
            "spread": f"{min(rates):.0f}-{max(rates):.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--repeat", type=int, default=4, help="list the shards this many times per pass")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    from alexnet_tf.data import demo
    from alexnet_tf.data.prepare import prepare

    root = demo.ensure_demo()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared, raw = pathlib.Path(tmp) / "prepared", pathlib.Path(tmp) / "raw"
        raw.mkdir()
        prepare(f"folder:{root}", prepared, splits=("train",), shards={"train": 8}, progress=False)
        write_raw_shards(f"folder:{root}", raw)
        for name, uri in (("prepared 256x256 shards", f"records:{prepared}"), ("raw JPEG shards", f"records:{raw}")):
            rows.append({"input": name, "batch": args.batch, **rate(uri, args.batch, args.epochs, args.repeat)})
    print(f"input pipeline, full augmentation (random crop, flip, PCA lighting), {common.machine()['cores']} cores")
    common.print_table(rows, ["input", "batch", "images_per_epoch", "images_per_s", "spread"])
    print(f"wrote {common.write_json('input_pipeline', {'machine': common.machine(), 'rows': rows})}")


if __name__ == "__main__":
    main()
