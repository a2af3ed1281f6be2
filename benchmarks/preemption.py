"""How long a pre-empted training run takes to stop: seconds from `kill -TERM` to the process's exit (one step, one
backup at that step, exit), against the 30 s grace period Kubernetes and most schedulers give.

    python benchmarks/preemption.py [--trials 3] [--after 45] [--preset demo]

Starts `alexnet-tf train --preset PRESET --fresh` in a temporary run directory, sends SIGTERM `--after` seconds
after training's first epoch begins, and times the exit. Prints each trial and the median, and writes
benchmarks/results/preemption.json.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def trial(preset: str, after: float, run_dir: pathlib.Path) -> dict:
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tf.cli", "train", "--preset", preset, "--fresh",
                                "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    for line in process.stdout:
        if line.startswith("Epoch 1/"):
            break
    time.sleep(after)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    process.wait()
    seconds = time.monotonic() - sent
    stopped = re.search(r"stopped at epoch (\d+), batch (\d+) \(step (\d+)\).*\(([\d.]+) s after the signal\)", rest)
    return {"exit_status": process.returncode, "seconds_to_exit": round(seconds, 2),
            "backup_seconds_after_signal": float(stopped[4]) if stopped else None,
            "stopped_at": {"epoch": int(stopped[1]), "batch": int(stopped[2]), "step": int(stopped[3])}
            if stopped else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--after", type=float, default=45.0, help="seconds into epoch 1 to send SIGTERM")
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    trials = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.trials):
            trials.append(trial(args.preset, args.after, pathlib.Path(folder) / "run"))
            print(f"trial {index + 1}: exit status {trials[-1]['exit_status']}, {trials[-1]['seconds_to_exit']:.1f} s "
                  f"from SIGTERM to exit (backup written {trials[-1]['backup_seconds_after_signal']} s after it, "
                  f"at {trials[-1]['stopped_at']})", flush=True)
    median = statistics.median(t["seconds_to_exit"] for t in trials)
    result = {"machine": common.machine(), "preset": args.preset, "after_seconds": args.after, "trials": trials,
              "seconds_to_exit_median": median}
    print(f"median {median:.1f} s from SIGTERM to exit over {args.trials} trials (grace periods are typically 30 s)")
    print(f"wrote {common.write_json('preemption', result)}")


if __name__ == "__main__":
    main()
