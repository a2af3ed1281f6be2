"""The paper's offline step: every image to 256x256 (shorter side, then centre), re-encoded as JPEG into sharded
TFRecords, with the training statistics (mean image, RGB covariance eigen-decomposition) computed in the same pass.

Atomic and resumable: each shard is written under a temporary name, its summary and partial statistics are saved,
then it is renamed; a re-run skips every finished shard. Images that cannot be used are skipped and recorded in
the manifest with the reason, never fatal.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import pathlib
import threading
import time

import numpy as np
import tensorflow as tf

from alexnet_tf.data import ops, records
from alexnet_tf.data.sources import DatasetError, Source, open_dataset
from alexnet_tf.data.stats import StatsAccumulator
from alexnet_tf.process import atomic, disk
from alexnet_tf.process.progress import progress_bar

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
EXAMPLES_PER_SHARD = 1250
"""Automatic shard count: ImageNet's 1.28M training images give 1024 shards, as in tensorflow/models."""
_STATE = ".prepare"
"""Sub-folder with each finished shard's summary and partial statistics (what makes a re-run resume)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """How `prepare` converts images.

    quality: JPEG quality of the re-encoded 256x256 images.
    min_side: images whose shorter side is smaller are skipped (upscaling them would invent the picture).
    max_pixels: images larger than this (read from the header) are skipped, before decoding.
    workers: shards converted at once (threads; TensorFlow's ops release the GIL).
    """

    size: int = ops.PAPER_SIZE
    quality: int = 95
    min_side: int = 16
    max_pixels: int = ops.DEFAULT_MAX_PIXELS
    workers: int = max(1, os.cpu_count() or 1)


class _Converter:
    """Bytes -> (256x256 JPEG bytes, uint8 pixels, note); one traced function for the common path."""

    def __init__(self, options: PrepareOptions):
        self.options = options
        decode = ops.decode(options.max_pixels)
        square = ops.rescale_to_square(options.size)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def inspect(data):
            fmt = ops.image_format(data)
            channels = tf.cond(tf.equal(fmt, "jpeg"), lambda: tf.io.extract_jpeg_shape(data)[2], lambda: 3)
            return fmt, channels

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def decoded(data):
            return decode(data)

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def finish(image):
            pixels = square(image)
            return tf.io.encode_jpeg(pixels, quality=options.quality, chroma_downsampling=True), pixels

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def recover_truncated(data):
            return tf.io.decode_jpeg(data, channels=3, try_recover_truncated=True, acceptable_fraction=0.5)

        self._inspect, self._decode, self._finish, self._recover = inspect, decoded, finish, recover_truncated

    def __call__(self, data: bytes, name: str) -> tuple[bytes, np.ndarray, str]:
        """Raises ValueError with the reason when the image cannot be used."""
        note = ""
        try:
            fmt, channels = (v.numpy() for v in self._inspect(data))
        except tf.errors.OpError as error:
            raise ValueError(ops.error_reason(error)) from None
        fmt = fmt.decode()
        suffix = pathlib.Path(name).suffix.lower().lstrip(".")
        if fmt and suffix in ("jpg", "jpeg", "png", "gif", "bmp") and fmt != suffix.replace("jpg", "jpeg"):
            note = f"{fmt.upper()} data in a .{suffix} file"
        elif fmt == "jpeg" and channels == 4:
            note = "CMYK JPEG converted to RGB"
        elif fmt == "jpeg" and channels == 1:
            note = "grayscale JPEG converted to RGB"
        try:
            image = self._decode(data)
        except tf.errors.OpError as error:
            if fmt != "jpeg":
                raise ValueError(ops.error_reason(error)) from None
            try:
                image = self._recover(data)
                note = "truncated JPEG recovered (missing rows filled)"
            except tf.errors.OpError:
                raise ValueError(ops.error_reason(error)) from None
        height, width = int(image.shape[0]), int(image.shape[1])
        if min(height, width) < self.options.min_side:
            raise ValueError(f"too small: {width}x{height}, the shorter side is under {self.options.min_side} px")
        jpeg, pixels = self._finish(image)
        return jpeg.numpy(), pixels.numpy(), note


@dataclasses.dataclass
class _ShardJob:
    split: str
    index: int
    count: int
    start: int
    stop: int


class _Progress:
    """A thread-safe image counter shown by the main thread (a bar on a terminal, lines in a log)."""

    def __init__(self, total: int, enabled: bool):
        self.done, self.lock, self.total, self.shown = 0, threading.Lock(), total, -1
        self.bar = None
        if enabled and total:
            self.bar = progress_bar(total, "image")

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n

    def show(self) -> None:
        if self.bar is not None and self.done != self.shown:
            self.shown = self.done
            self.bar.update(min(self.done, self.total))


def prepare(
    source_uri: str,
    out_dir: str | pathlib.Path,
    *,
    splits: tuple[str, ...] = ("train", "validation"),
    shards: dict[str, int] | None = None,
    options: PrepareOptions | None = None,
    progress: bool = True,
    **open_kwargs,
) -> dict:
    """Convert `source_uri` into 256x256 JPEG shards in `out_dir`; return the manifest (also written there).

    A split the source does not have is left out (except `train`, which the statistics need). `open_kwargs` go to
    `open_dataset` (manual_dir, data_dir, label_offset, num_classes).
    """
    options = options or PrepareOptions()
    out = pathlib.Path(out_dir)
    (out / _STATE).mkdir(parents=True, exist_ok=True)
    sources: dict[str, Source] = {}
    for split in splits:
        try:
            sources[split] = open_dataset(source_uri, split, progress=progress, **open_kwargs)
        except DatasetError:
            if split == "train":
                raise
            log.warning("%s has no '%s' split: preparing without it", source_uri, split)
    classes = sources["train"].classes if "train" in sources else next(iter(sources.values())).classes

    jobs: list[_ShardJob] = []
    for split, source in sources.items():
        total = len(source)
        count = (shards or {}).get(split) or max(1, math.ceil(total / EXAMPLES_PER_SHARD))
        count = min(count, max(total, 1))
        bounds = np.linspace(0, total, count + 1).round().astype(int)
        jobs += [_ShardJob(split, i, count, int(bounds[i]), int(bounds[i + 1])) for i in range(count)]

    converter = _Converter(options)
    todo = [job for job in jobs if not _finished(out, job)]
    bar = _Progress(sum(job.stop - job.start for job in todo), progress)
    if progress:
        print(f"preparing {source_uri} -> {out}: {len(todo)} of {len(jobs)} shards to write "
              f"({bar.total} images, {options.workers} workers)")
    with concurrent.futures.ThreadPoolExecutor(options.workers) as pool:
        futures = [pool.submit(_write_shard, out, sources[job.split], job, converter, bar) for job in todo]
        try:
            while futures:
                done, pending = concurrent.futures.wait(futures, timeout=0.5)
                for future in done:
                    future.result()  # re-raise a worker's unexpected error
                futures = list(pending)
                bar.show()
        except disk.WriteError as error:  # a full disk: stop the other shards, say how much the rest needs
            for future in futures:
                future.cancel()
            raise disk.WriteError(error.path, error.reason, _bytes_needed(out, todo), error.note) from None
    bar.show()

    # Gather the shard summaries and the statistics, then publish the manifest.
    counts = dict.fromkeys(sources, 0)
    skipped, notes, shard_counts = [], {}, {}
    accumulator = StatsAccumulator(options.size)
    for job in jobs:
        summary = json.loads(_summary_path(out, job).read_text())
        counts[job.split] += summary["written"]
        skipped += summary["skipped"]
        for note, files in summary["notes"].items():
            notes.setdefault(note, []).extend(files)
        shard_counts[job.split] = job.count
        if job.split == "train":
            accumulator.merge(StatsAccumulator.load(_stats_path(out, job)))
    accumulator.finalize().save(out / "stats.npz")
    manifest = {
        "version": MANIFEST_VERSION,
        "source": source_uri,
        "classes": classes,
        "counts": counts,
        "shards": shard_counts,
        "label_offset": 0,
        "image_size": options.size,
        "jpeg_quality": options.quality,
        "skipped": skipped,
        "converted": {note: {"count": len(files), "files": files[:1000]} for note, files in sorted(notes.items())},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    atomic.write_text(out / "labels.txt", "\n".join(classes) + "\n")
    if progress:
        print(f"wrote {sum(counts.values())} images ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
              f"skipped {len(skipped)}; manifest, labels and stats in {out}")
    return manifest


def _summary_path(out: pathlib.Path, job: _ShardJob) -> pathlib.Path:
    return out / _STATE / f"{records.shard_name(job.split, job.index, job.count)}.json"


def _stats_path(out: pathlib.Path, job: _ShardJob) -> pathlib.Path:
    return out / _STATE / f"{records.shard_name(job.split, job.index, job.count)}.stats.npz"


def _bytes_needed(out: pathlib.Path, todo: list[_ShardJob]) -> int | None:
    """The shards still to write, at the bytes per image of the shards already finished (None before the first)."""
    finished = [job for job in todo if _finished(out, job)]
    if not finished:
        return None
    size = sum((out / records.shard_name(j.split, j.index, j.count)).stat().st_size for j in finished)
    per_image = size / max(1, sum(j.stop - j.start for j in finished))
    return int(per_image * sum(j.stop - j.start for j in todo if j not in finished))


def _finished(out: pathlib.Path, job: _ShardJob) -> bool:
    done = (out / records.shard_name(job.split, job.index, job.count)).is_file() and _summary_path(out, job).is_file()
    return done and (job.split != "train" or _stats_path(out, job).is_file())


def _write_shard(out: pathlib.Path, source: Source, job: _ShardJob, convert: _Converter, bar: _Progress) -> None:
    """Convert one shard's examples; publish summary and statistics first, the shard itself last (by rename)."""
    final = out / records.shard_name(job.split, job.index, job.count)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    accumulator = StatsAccumulator(convert.options.size) if job.split == "train" else None
    written, skipped, notes = 0, [], {}
    with disk.guard(final, temporaries=[tmp, _stats_path(out, job), _summary_path(out, job)],
                    note="finished shards are kept: free space and run the same command to go on"):
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for example in source.examples(job.start, job.stop):
                bar.add(1)
                if example.error:
                    skipped.append({"file": example.name, "split": job.split, "reason": example.error})
                    continue
                try:
                    jpeg, pixels, note = convert(example.data, example.name)
                except ValueError as error:
                    skipped.append({"file": example.name, "split": job.split, "reason": str(error)})
                    continue
                if note:
                    notes.setdefault(note, []).append(example.name)
                if not 0 <= example.label < len(source.classes):
                    skipped.append({"file": example.name, "split": job.split,
                                    "reason": f"label {example.label} outside 0..{len(source.classes) - 1}"})
                    continue
                writer.write(records.encode_example(
                    jpeg, example.label, height=convert.options.size, width=convert.options.size,
                    synset=source.classes[example.label], filename=example.name,
                ))
                if accumulator is not None:
                    accumulator.add(pixels)
                written += 1
        if accumulator is not None:
            accumulator.save(_stats_path(out, job))
        atomic.write_text(_summary_path(out, job), json.dumps({"written": written, "skipped": skipped, "notes": notes}))
        tmp.replace(final)
