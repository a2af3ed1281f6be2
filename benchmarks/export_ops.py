"""Where an exported signature's time goes: milliseconds per image at several batch sizes and the costliest op types,
for float32 and bfloat16 exports of one network, run through TF Serving's TF1 Session path.

Two figures per batch size: the wall time of one batch per image (its latency, with the threads TensorFlow gives one
run: its CPU device's pools are per process and were made when this process exported, so both cores), and the CPU
time per image over all threads, the cost that sets the throughput of a server whose cores are all busy (the local
server under load; two batch threads on two cores). The op profile sums op times over threads, so it adds up to the
CPU time.

    python benchmarks/export_ops.py [--image FILE] [--batches 4 8 16] [--signature center_crop] [--runs 7]

The network is a freshly initialised 1000-class AlexNet (the bfloat16 export forced: a random network's answers say
nothing of agreement). The request is `--image` (default: a generated 512x600 JPEG), repeated to fill the batch.
Prints a table per precision and writes benchmarks/results/export_ops.json.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common, op_profile  # noqa: E402


def session_run(path: pathlib.Path, signature: str, images: list[bytes], runs: int, profile: bool):
    """(median wall seconds per run, mean CPU seconds per run, Trace or None) of `signature` on one batch of
    `images`."""
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        definition = meta.signature_def[signature]
        (info,) = definition.inputs.values()
        feed = {info.name: np.array(images, dtype=object)}
        fetch = definition.outputs["probabilities"].name
        for _ in range(3):
            session.run(fetch, feed)
        times = []
        cpu_start = time.process_time()
        for _ in range(runs):
            start = time.perf_counter()
            session.run(fetch, feed)
            times.append(time.perf_counter() - start)
        cpu = (time.process_time() - cpu_start) / runs
        trace = None
        if profile:
            with op_profile.trace() as trace:
                for _ in range(5):
                    session.run(fetch, feed)
            trace.runs = 5 * len(images)  # per image
    return statistics.median(times), cpu, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="image file (default: a generated 512x600 JPEG)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--profile-batch", type=int, default=8, help="batch size of the per-op profile")
    parser.add_argument("--signature", default="center_crop")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per batch size (median reported)")
    args = parser.parse_args()

    import io

    import numpy as np
    from PIL import Image

    import export
    from alexnet_tf import build_alexnet

    if args.image:
        image = pathlib.Path(args.image).read_bytes()
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (512, 600, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        image = buffer.getvalue()
    model = build_alexnet(1000)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bfloat16"):
            path = export.export(model, pathlib.Path(tmp) / precision, precision=precision,
                                 force_precision=True).path
            rows = []
            for batch in args.batches:
                seconds, cpu, _ = session_run(path, args.signature, [image] * batch, args.runs, profile=False)
                rows.append({"batch": batch, "ms_per_image": round(1000 * seconds / batch, 2),
                             "cpu_ms_per_image": round(1000 * cpu / batch, 2)})
            _, _, trace = session_run(path, args.signature, [image] * args.profile_batch, args.runs, profile=True)
            ops = trace.top(12)
            print(f"{precision}: {args.signature}")
            common.print_table(rows, ["batch", "ms_per_image", "cpu_ms_per_image"])
            print(f"  op types at batch {args.profile_batch}, ms per image:")
            common.print_table(ops, ["op", "ms_per_run", "share"])
            results[precision] = {"batches": rows, "ops": ops}
    m = common.machine()
    for batch in args.batches:
        cpu = [next(r["cpu_ms_per_image"] for r in results[p]["batches"] if r["batch"] == batch)
               for p in ("float32", "bfloat16")]
        print(f"batch {batch}: CPU per image float32 / bfloat16 = {cpu[0] / cpu[1]:.2f}x")
    print(f"CPU: {m['cpu']}, {m['cores']} cores, flags: {' '.join(m['flags'])}, {m['date']}")
    out = common.write_json("export_ops", {"machine": common.machine(), "signature": args.signature,
                                           "image": args.image or "generated", **results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
