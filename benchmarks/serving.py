"""Requests/second and latency percentiles of the local server for 1, 4 and 16 concurrent clients, and its overhead
over calling the SavedModel's signature directly at the same batch size.

    python benchmarks/serving.py [--requests 40] [--signature center_crop]

Exports a freshly initialised AlexNet to a temporary directory and serves it in this process (gRPC on loopback).
Target (DESIGN.md section 7): overhead <= 15% over the direct call.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--signature", default="center_crop")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    import export
    from alexnet_tf import build_alexnet
    from serving import PredictClient
    from serving.server import LocalServer, Servable, ServerOptions

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buffer, "JPEG")
    images = [buffer.getvalue()] * args.batch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_saved_model(build_alexnet(1000), tmp)
        # Direct: the same TF1 Session path the server uses, no RPC.
        servable = Servable("alexnet", 1, path)
        feed = {"image_bytes": np.array(images, dtype=object)}
        direct = common.median_seconds(lambda: servable.run(args.signature, feed), repeats=args.requests)
        servable.retire()
        server = LocalServer(pathlib.Path(tmp) / "alexnet", options=ServerOptions(port=0, rest_port=None,
                                                                                  max_concurrent=2)).start()
        target = f"127.0.0.1:{server.port}"
        for clients in (1, 4, 16):
            latencies: list[float] = []

            def client_run(_, latencies=latencies):
                client = PredictClient(target, signature=args.signature, timeout=300)
                client.predict(images)  # connect
                for _ in range(args.requests):
                    start = time.perf_counter()
                    client.predict(images)
                    latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                list(pool.map(client_run, range(clients)))
            elapsed = time.perf_counter() - start
            lat = np.array(latencies) * 1e3
            rows.append({"clients": clients, "requests_per_s": round(len(lat) / elapsed, 2),
                         "p50_ms": round(float(np.percentile(lat, 50)), 1),
                         "p95_ms": round(float(np.percentile(lat, 95)), 1),
                         "p99_ms": round(float(np.percentile(lat, 99)), 1)})
        server.stop()
    single = rows[0]["p50_ms"] / 1e3
    overhead = single / direct - 1
    print(f"signature {args.signature}, {args.batch} image(s) per request; direct Session.run median "
          f"{direct * 1e3:.1f} ms")
    common.print_table(rows, ["clients", "requests_per_s", "p50_ms", "p95_ms", "p99_ms"])
    print(f"server overhead at 1 client: {overhead:+.1%} (target <= 15%)")
    out = common.write_json("serving", {"machine": common.machine(), "signature": args.signature, "batch": args.batch,
                                        "direct_ms": round(direct * 1e3, 2), "overhead": round(overhead, 4),
                                        "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
