"""Load test of `alexnet-tf serve`: requests/second and latency percentiles for 1, 4, 16 and 64 concurrent gRPC
clients on `center_crop` and `serving_default`, with batching off and on (serving/batching.config), errors counted,
health checked throughout; then a soak at 16 clients with the server's resident memory sampled.

    python benchmarks/serving.py [--seconds 15] [--repeats 3] [--soak-seconds 180] [--baseline-tree DIR]
                                 [--precision float32 bfloat16]

The server runs in its own process (as in production), on a freshly initialised 1000-class AlexNet exported to a
temporary directory; the clients are threads of this process. The request is one image: by default a generated
512x600 JPEG of 112 KB (textured with noise, so it decodes slower than a photo of its size), or `--image FILE`
(the issue measured matplotlib's 61 KB 512x600 `sample_data/grace_hopper.jpg`). The forward bound is the
machine's measured fp32 matmul peak over the network's forward FLOPs per 224 crop: the crops/second no server can
beat. `--baseline-tree` also serves with another checkout (e.g. a `git worktree` of an older commit), batching off,
to compare the unbatched path before and after. `--precision float32 bfloat16` exports the same network both ways
(`alexnet-tf export --precision`; the bfloat16 one forced, since a random network's near-uniform answers are no test
of agreement, which is printed all the same) and serves each, side by side in one run, with the bfloat16/float32
ratio of every cell at the end.
Each cell is run `--repeats` times and reported by its median run (req/s of every run kept in "runs"). With
batching on, "mean_batch" is the images per batch run over all the cell's repeats (from the server's own
`processed_batch_size` histogram at /monitoring/prometheus/metrics): how full the batches were.
Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

CROPS = {"center_crop": 1, "serving_default": 10}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tree: pathlib.Path, base: pathlib.Path, batching: bool,
                 config: pathlib.Path = ROOT / "serving" / "batching.config") -> tuple[subprocess.Popen, int, int]:
    """`alexnet-tf serve` from `tree` in its own process; returns it, its gRPC port and its REST (metrics) port."""
    port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "alexnet_tf.cli", "serve", "--model-base-path", str(base), f"--port={port}",
               "--rest-port", str(rest_port), "--max-queue", "256"]
    if tree == ROOT:  # older checkouts answered health checks without being asked (and knew no such flag)
        command.append("--enable_grpc_healthcheck_service=true")
    if batching:
        command += ["--enable_batching=true", f"--batching_parameters_file={config}"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    process = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    from serving import PredictClient, ServingError

    client = PredictClient(f"127.0.0.1:{port}", timeout=30)
    deadline = time.time() + 300
    while True:
        try:
            client.metadata()
            return process, port, rest_port
        except ServingError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit("server did not start:\n" + process.communicate()[0][-3000:]) from None
            time.sleep(0.5)


def batches_run(rest_port: int) -> tuple[float, float]:
    """(rows, batches) the server has run so far: its TF Serving processed_batch_size histogram's sum and count
    (one sample per batch run; no padding without allowed_batch_sizes)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    rows = batches = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == ":tensorflow:serving:batching_session:processed_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    rows += sample.value
                elif sample.name.endswith("_count"):
                    batches += sample.value
    return rows, batches


def resident_mb(pid: int) -> float:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1]) / 1024


class HealthWatch:
    """Asks the gRPC health service once a second while load runs; counts answers that are not SERVING."""

    def __init__(self, port: int):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        self.request, self.serving = health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse.SERVING
        self.checks = self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(1.0):
            self.checks += 1
            try:
                if self.stub.Check(self.request, timeout=5).status != self.serving:
                    self.failures += 1
            except Exception:  # noqa: BLE001 - any failure to answer counts
                self.failures += 1

    def close(self) -> tuple[int, int]:
        self.stop.set()
        self.thread.join()
        return self.checks, self.failures


def load(port: int, signature: str, clients: int, seconds: float, image: bytes) -> dict:
    """`clients` threads sending one-image requests back to back for `seconds`."""
    import numpy as np

    from serving import PredictClient

    latencies: list[float] = []
    errors = [0]
    window = [0.0, 0.0]  # start, end: set as the last client becomes ready, before any of them goes on

    def open_window():
        window[0] = time.perf_counter()
        window[1] = window[0] + seconds

    ready = threading.Barrier(clients, action=open_window)

    def client_run(_):
        client = PredictClient(f"127.0.0.1:{port}", signature=signature, timeout=120)
        client.predict([image])  # connect and warm
        ready.wait()
        while time.perf_counter() < window[1]:
            start = time.perf_counter()
            try:
                client.predict([image])
                latencies.append(time.perf_counter() - start)
            except Exception:  # noqa: BLE001 - counted, the load goes on
                errors[0] += 1

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_run, i) for i in range(clients)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - window[0]
    lat = np.array(latencies) * 1e3
    return {"signature": signature, "clients": clients, "requests": len(lat), "errors": errors[0],
            "requests_per_s": round(len(lat) / elapsed, 2),
            "crops_per_s": round(len(lat) * CROPS[signature] / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="load per cell of the table")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median run is reported")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--signatures", nargs="+", default=["center_crop", "serving_default"])
    parser.add_argument("--soak-seconds", type=float, default=180.0)
    parser.add_argument("--baseline-tree", help="another checkout to serve with, batching off, for comparison")
    parser.add_argument("--batching-config", default=str(ROOT / "serving" / "batching.config"),
                        help="BatchingParameters file for the batching-on server (default: serving/batching.config)")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=("float32", "bfloat16"),
                        help="export precisions to serve, one after the other (default: float32)")
    parser.add_argument("--image", help="image file to send (default: a generated 512x600 JPEG of 112 KB)")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    import export
    from alexnet_tf import build_alexnet

    rows, y, x = np.mgrid[0:512, 0:600, 0:3]
    pixels = (128 + 60 * np.sin(y / 37 + x) * np.cos(rows / 53)
              + np.random.default_rng(0).normal(0, 12, (512, 600, 3))).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    image = pathlib.Path(args.image).read_bytes() if args.image else buffer.getvalue()
    width, height = Image.open(io.BytesIO(image)).size

    model = build_alexnet(1000)
    flops_per_crop = sum(common.forward_flops(model).values())
    peak = common.matmul_peak_gflops("float32")
    bound = peak * 1e9 / flops_per_crop
    print(f"image {args.image or 'generated'}: {width}x{height}, {len(image) / 1024:.0f} KB; "
          f"forward {flops_per_crop / 1e9:.2f} GFLOP per crop; fp32 matmul peak "
          f"{peak:.0f} GFLOP/s -> forward bound {bound:.0f} crops/s", flush=True)

    table, soak = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        bases = {}
        for precision in args.precision:
            result = export.export(model, pathlib.Path(tmp) / precision, precision=precision, force_precision=True)
            bases[precision] = result.path.parent
            if result.agreement is not None:
                print(result.agreement.line(), flush=True)
        servers = [("this tree", ROOT, batching, precision) for precision in args.precision for batching in
                   (False, True)]
        if args.baseline_tree:
            servers.insert(0, ("baseline", pathlib.Path(args.baseline_tree).resolve(), False, "float32"))
        for label, tree, batching, precision in servers:
            base = bases[precision]
            process, port, rest_port = start_server(tree, base, batching, pathlib.Path(args.batching_config))
            health = HealthWatch(port)
            for signature in args.signatures:
                for clients in args.clients:
                    if label == "baseline" and clients != 1:
                        continue
                    before = batches_run(rest_port) if batching else None
                    runs = sorted((load(port, signature, clients, args.seconds, image) for _ in range(args.repeats)),
                                  key=lambda run: run["requests_per_s"])
                    row = {"server": label, "precision": precision, "batching": "on" if batching else "off",
                           **runs[len(runs) // 2],
                           "errors": sum(run["errors"] for run in runs),
                           "runs": [run["requests_per_s"] for run in runs]}
                    if before is not None:  # images per batch run, over all repeats of the cell
                        rows, batches = (after - start for after, start in zip(batches_run(rest_port), before))
                        row["mean_batch"] = round(rows / batches, 2) if batches else None
                    row["of_bound"] = round(row["crops_per_s"] / bound, 3)
                    table.append(row)
                    print(row, flush=True)
            if batching and args.soak_seconds:
                samples = []
                done = threading.Event()

                def sample(samples=samples, done=done, pid=process.pid):
                    while not done.wait(5.0):
                        samples.append((round(time.perf_counter(), 1), round(resident_mb(pid))))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                soak_row = load(port, "center_crop", 16, args.soak_seconds, image)
                done.set()
                sampler.join()
                settled = [mb for _, mb in samples[len(samples) // 4:]]  # after the first quarter: warmed up
                soak = {**soak_row, "rss_mb_samples": [mb for _, mb in samples],
                        "rss_mb_after_warmup_first": settled[0], "rss_mb_last": settled[-1],
                        "rss_mb_growth_after_warmup": settled[-1] - settled[0]}
                print({k: v for k, v in soak.items() if k != "rss_mb_samples"}, flush=True)
            checks, failures = health.close()
            table.append({"server": label, "precision": precision, "batching": "on" if batching else "off",
                          "health_checks": checks, "health_failures": failures})
            process.terminate()
            process.wait(timeout=60)

    load_rows = [r for r in table if "clients" in r]
    common.print_table(load_rows, ["server", "precision", "batching", "signature", "clients", "requests_per_s",
                                   "crops_per_s", "of_bound", "p50_ms", "p99_ms", "mean_batch", "errors", "runs"])
    for r in table:
        if "health_checks" in r:
            print(f"{r['server']}, {r['precision']}, batching {r['batching']}: {r['health_checks']} health checks, "
                  f"{r['health_failures']} not SERVING")
    ratios = []
    for row in load_rows:
        if row["precision"] == "bfloat16" and row["server"] == "this tree":
            base_row = next((r for r in load_rows if r["server"] == "this tree" and r["precision"] == "float32" and all(
                r[k] == row[k] for k in ("batching", "signature", "clients"))), None)
            if base_row is None:
                continue
            ratios.append({**{k: row[k] for k in ("batching", "signature", "clients")},
                           "bfloat16_vs_float32": round(row["requests_per_s"] / base_row["requests_per_s"], 2)})
            print(f"bfloat16 / float32, batching {row['batching']}, {row['signature']}, {row['clients']} client(s): "
                  f"{ratios[-1]['bfloat16_vs_float32']:.2f}x")
    out = common.write_json("serving", {"machine": common.machine(), "image": args.image or "generated",
                                        "image_size": [width, height], "image_bytes": len(image),
                                        "forward_gflop_per_crop": round(flops_per_crop / 1e9, 3),
                                        "matmul_peak_gflops": round(peak, 1), "forward_bound_crops_per_s":
                                        round(bound, 1), "rows": table, "soak": soak,
                                        "bfloat16_vs_float32": ratios})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
