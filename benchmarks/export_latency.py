"""Latency (median, p95) of each exported signature for 1 and 16 images, through the loaded SavedModel.

    python benchmarks/export_latency.py [--repeats 20]

Exports a freshly initialised AlexNet (1000 classes) to a temporary directory, so it needs no training run.
Target (DESIGN.md section 7): the 10-crop signature on one image within 12x the centre-crop signature's latency.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def percentiles(run, repeats: int) -> tuple[float, float]:
    import numpy as np

    run()  # warm-up: the first call builds the function's kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.percentile(times, 95)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    import export
    from alexnet_tf import build_alexnet

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()  # an ImageNet-sized photo
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_saved_model(build_alexnet(1000), tmp)
        signatures = tf.saved_model.load(str(path)).signatures
        for batch in (1, 16):
            images = tf.constant([jpeg] * batch)
            pixels = tf.constant(rng.integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8))
            for name, kwargs in (("center_crop", {"image_bytes": images}),
                                 ("serving_default", {"image_bytes": images}),
                                 ("from_pixels", {"images": pixels})):
                median, p95 = percentiles(lambda n=name, k=kwargs: signatures[n](**k)["probabilities"].numpy(),
                                          args.repeats)
                rows.append({"signature": name, "batch": batch, "median_ms": round(median, 1), "p95_ms": round(p95, 1),
                             "images_per_s": round(batch / median * 1e3, 1)})
    one = {r["signature"]: r["median_ms"] for r in rows if r["batch"] == 1}
    ratio = one["serving_default"] / one["center_crop"]
    common.print_table(rows, ["signature", "batch", "median_ms", "p95_ms", "images_per_s"])
    print(f"10-crop / centre-crop latency for one image: {ratio:.1f}x (target <= 12x)")
    path = common.write_json("export_latency", {"machine": common.machine(), "rows": rows,
                                                "ten_crop_over_center_crop_1_image": round(ratio, 2)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
