"""Per-op time of a TensorFlow run from its profiler trace: which kernels a training step spends its time in.

    with op_profile.trace() as trace:
        run_steps()
    rows = trace.top(10)   # [{"op": "Conv2DBackpropFilter", "ms_per_run": ..., "share": 0.31}, ...]

Reads the XSpace the profiler writes (TensorFlow's own `xplane.pb`): every TraceMe event named "name:Type" on the
host's threads is one op's kernel, every "..._fusion" event one kernel of an XLA cluster; their durations are
summed by op type (fusion kind). Shares are of the summed op time (the two
cores' threads add up, so a share says where the CPU went, not the wall time).
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import re
import tempfile

OP_EVENT = re.compile(r"^[^:]+:(_?[A-Z][A-Za-z0-9_]*)$")
XLA_EVENT = re.compile(r"^([a-z][a-z0-9_]*_fusion|wrapped_[a-z0-9_]+)(\.\d+)?$")
"""A kernel of an XLA cluster inside a graph ("multiply_pad_fusion"): counted under "XLA: <kind>"."""


class Trace:
    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.runs = 1
        self.totals: collections.Counter[str] = collections.Counter()

    def read(self) -> None:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

        for path in self.directory.rglob("*.xplane.pb"):
            space = xplane_pb2.XSpace.FromString(path.read_bytes())
            for plane in space.planes:
                if not plane.name.startswith("/host:"):
                    continue
                names = {key: meta.name for key, meta in plane.event_metadata.items()}
                for line in plane.lines:
                    for event in line.events:
                        name = names.get(event.metadata_id, "")
                        match = OP_EVENT.match(name)
                        if match:
                            self.totals[match[1]] += event.duration_ps
                        elif match := XLA_EVENT.match(name):
                            self.totals[f"XLA: {match[1]}"] += event.duration_ps

    def top(self, count: int = 10) -> list[dict]:
        """The `count` op types with the most time: milliseconds per run (`runs` set by the caller) and share."""
        total = sum(self.totals.values()) or 1
        return [{"op": op, "ms_per_run": round(ps / 1e9 / self.runs, 2), "share": round(ps / total, 3)}
                for op, ps in self.totals.most_common(count)]


@contextlib.contextmanager
def trace():
    """Profile the block; the Trace is filled when the block ends."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        result = Trace(pathlib.Path(directory))
        tf.profiler.experimental.start(directory)
        try:
            yield result
        finally:
            tf.profiler.experimental.stop()
            result.read()
