"""tf.data pipelines from TFRecord shards: training (the paper's augmentation) and evaluation (centre or 10 crops).

Shards -> parallel interleave -> block shuffle -> parallel map (fused decode-and-crop, mean subtraction, flip, PCA
lighting) -> batch -> prefetch. Every random choice comes from stateless ops keyed by (seed, epoch, position in
the epoch), so an epoch can be resumed at any batch, and `deterministic=True` gives the same batches on every
run. A record that cannot be read or decoded is dropped and counted (`SkipCounter`), never fatal.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

from alexnet_tf.data import ops, records
from alexnet_tf.data.sources import RecordsSource
from alexnet_tf.data.stats import Stats

PREFETCH_BATCHES = 2
"""Batches prepared ahead of the training step."""


def parallel_calls() -> int:
    """Parallel decode-and-augment calls: one per schedulable core, plus one to cover waits on reads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def _fixed_parallelism(dataset: tf.data.Dataset, options: tf.data.Options | None = None) -> tf.data.Dataset:
    """Switch tf.data's autotuner off; the pipelines set their parallelism explicitly instead.

    Measured on 2 cores (12 passes each, 3 runs): with autotuning about one pass in three ran on one thread
    (990 instead of 1,700-2,000 img/s, the second core idle), whichever of map, interleave or prefetch was left
    to it; with every knob fixed, no pass did.
    """
    options = options or tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class SkipCounter:
    """Counts examples that entered the decode step and examples that came out of it; at the end of an epoch
    (a finite pass) the difference is the number of unreadable records that were dropped.

    `consumed` is the number of records, in the epoch's order, up to and including the last one of the newest
    batch the training step has taken (set as the step takes it: `train_epochs` ends in a synchronous map, after
    the prefetch). Minus the batches' examples, it is the count of unreadable records before that point, which a
    backup records, so that a resumed epoch skips exactly the records the interrupted one had used."""

    def __init__(self):
        with tf.init_scope():
            self.entered = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_entered")
            self.delivered = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_delivered")
            self.consumed = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_consumed")

    @property
    def skipped(self) -> int:
        return int(self.entered.numpy() - self.delivered.numpy())

    def unreadable_before(self, batches: int, batch_size: int) -> int:
        """Unreadable records among those consumed by the first `batches` batches of the epoch."""
        return int(self.consumed.numpy()) - batches * batch_size

    def reset(self) -> None:
        self.entered.assign(0)
        self.delivered.assign(0)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The paper's training augmentation; `pca_std=0` or `flip=False` switch parts off."""

    crop_size: int = ops.CROP_SIZE
    flip: bool = True
    pca_std: float = 0.1


def _records(source: RecordsSource, *, shuffle_seed, deterministic: bool | None, input_context) -> tf.data.Dataset:
    """The shards' serialized records, interleaved (file order shuffled by `shuffle_seed` unless it is None);
    under multi-worker training each worker reads its own share (whole shards when there are enough of them,
    otherwise every N-th record, like tf.data's AUTO policy)."""
    workers = input_context.num_input_pipelines if input_context is not None else 1
    by_file = workers > 1 and len(source.files) >= workers
    names = [str(f) for f in source.files]
    if by_file:
        names = names[input_context.input_pipeline_id :: workers]
    files = tf.constant(names)
    if shuffle_seed is not None and (workers == 1 or by_file):  # record sharding needs one file order everywhere
        files = tf.gather(files, _permutation(len(names), tf.stack([shuffle_seed, tf.constant(-1, tf.int64)])))
    files = tf.data.Dataset.from_tensor_slices(files)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(source.files), 16),
        num_parallel_calls=min(len(source.files), 16, parallel_calls()),
        deterministic=deterministic,
    )
    if workers > 1 and not by_file:
        records = records.shard(workers, input_context.input_pipeline_id)
    return records


def _permutation(count, seed: tf.Tensor) -> tf.Tensor:
    """A permutation of range(count), a pure function of the int64 pair `seed` (a stateless op, so the seed may be
    a tensor computed in the pipeline)."""
    count = tf.cast(count, tf.int64)
    return tf.random.experimental.index_shuffle(tf.range(count), seed, tf.maximum(count - 1, 0))


def _block_shuffle(dataset: tf.data.Dataset, block: int, seed: tf.Tensor) -> tf.data.Dataset:
    """Records permuted within consecutive blocks of `block` (each block by its own stateless permutation): the
    seeded, tensor-keyed counterpart of a shuffle buffer of that size, the same for the same (seed, epoch)."""

    def permute(index, records):
        return tf.gather(records, _permutation(tf.size(records), tf.stack([seed, index])))

    return dataset.batch(block).enumerate().map(permute).unbatch()


def _decode_square(source: RecordsSource):
    """Encoded bytes -> uint8 256x256: prepared shards are already square; raw ones go through the paper's step."""
    if source.prepared_size == ops.PAPER_SIZE:
        return lambda data: tf.ensure_shape(tf.io.decode_jpeg(data, channels=3), [ops.PAPER_SIZE, ops.PAPER_SIZE, 3])
    return ops.chain(ops.decode(), ops.rescale_to_square(ops.PAPER_SIZE))


def epoch_seed(seed, epoch) -> tf.Tensor:
    """The int64 seed of one epoch's shuffles and augmentation draws: a function of the run's seed and the epoch."""
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)


def _epoch_batches(source: RecordsSource, stats: Stats, batch_size: int, *, augmentation: Augmentation = Augmentation(),
                   shuffle_buffer: int = 10_000, seed: int = 0, epoch=0, skip_batches=0, skip_unreadable=0,
                   steps: int | None = None, deterministic: bool = False, input_context=None,
                   counter: SkipCounter | None = None, limit: int | None = None) -> tf.data.Dataset:
    """One epoch's (positions, images, labels) batches, positions being each example's place in the epoch's order
    (no dataset options: usable inside `flat_map`). The first `skip_batches` batches are left out, which used
    `skip_unreadable` unreadable records besides their examples; `epoch` and both skips may be tensors."""
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    size = augmentation.crop_size
    mean = tf.constant(stats.mean_image, tf.float32)
    # mean and its mirror image: a mirrored crop of (image - mean) is the mirrored crop minus a window of the
    # mirrored mean, so the flip happens on uint8 pixels and no float pass is spent on it.
    means = tf.stack([mean, tf.reverse(mean, axis=[1])])
    width = int(stats.mean_image.shape[1])
    lighting = ops.lighting_offset(augmentation.pca_std, stats.eigval, stats.eigvec)
    square = _decode_square(source)
    this_epoch = epoch_seed(seed, epoch)

    def example(position, serialized):
        # Every draw for this example comes from (seed, epoch, position in the epoch): a resumed epoch that skips
        # its first records draws exactly what the uninterrupted epoch drew for the rest.
        seeds = tf.random.experimental.stateless_split(tf.stack([this_epoch, position]), 3)
        parsed = records.parse(serialized, source.label_offset)
        if counter is not None:
            counter.entered.assign_add(1)
        flip = ops.flip_decision(seeds[1]) if augmentation.flip else tf.constant(False)
        image = square(parsed["image"])
        top, left = tf.unstack(ops.random_window(tf.shape(image), size, seeds[0]))
        crop = ops.mirror_if(image[top : top + size, left : left + size], flip)
        left = tf.where(flip, width - size - left, left)
        mean_window = means[tf.cast(flip, tf.int32), top : top + size, left : left + size]
        if augmentation.pca_std:  # (crop - mean) + offset as crop - (mean - offset): one float pass fewer
            mean_window = ops.add_per_channel(mean_window, -lighting(seeds[2]))
        image = tf.cast(crop, tf.float32) - mean_window
        return position, tf.ensure_shape(image, [size, size, 3]), parsed["label"]

    ordered = deterministic or None
    dataset = _records(source, shuffle_seed=this_epoch if limit is None else None, deterministic=ordered,
                       input_context=input_context)
    if limit is not None:  # the same first `limit` records every epoch
        dataset = dataset.take(limit)
    dataset = _block_shuffle(dataset, shuffle_buffer, this_epoch).enumerate()
    if steps is not None:  # exactly `steps` batches: the pass again (same order) if it is shorter
        dataset = dataset.repeat()
    # Consumed records are skipped here, before they are decoded: resuming mid-epoch costs a read, not a replay.
    dataset = dataset.skip(tf.cast(skip_batches, tf.int64) * batch_size + tf.cast(skip_unreadable, tf.int64))
    dataset = dataset.map(example, num_parallel_calls=parallel_calls(), deterministic=ordered)
    dataset = _drop_unreadable(dataset, counter).batch(batch_size, drop_remainder=True)
    if steps is not None:
        dataset = dataset.take(steps - tf.cast(skip_batches, tf.int64))
    return dataset.prefetch(PREFETCH_BATCHES)


def _train_options(dataset: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    # No prefetch after the last (synchronous) map: `train_epochs` notes the consumed position there.
    options.experimental_optimization.inject_prefetch = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return _fixed_parallelism(dataset, options)


def train_dataset(
    source: RecordsSource,
    stats: Stats,
    batch_size: int,
    *,
    augmentation: Augmentation = Augmentation(),
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    epoch: int = 0,
    skip_batches: int = 0,
    steps: int | None = None,
    deterministic: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    counter: SkipCounter | None = None,
    limit: int | None = None,
) -> tf.data.Dataset:
    """(images float32 [B, S, S, 3] mean-subtracted, labels int32 [B]) for epoch `epoch`, with the paper's
    augmentation: a random S = `augmentation.crop_size` crop (224; 227 for the caffe variant), a random mirror, and
    PCA lighting with the data set's eigen-decomposition.

    The epoch is a function of (seed, epoch): file order, shuffle and every augmentation draw (stateless ops keyed
    by the example's position in the epoch). `skip_batches` starts it that many batches in, exactly where an
    interrupted epoch stopped; `steps` makes it exactly that many batches. With `deterministic` the batches are
    bit-identical on every run; without it, parallel decoding may reorder nearby examples.

    The whole 256x256 JPEG is decoded, then cropped: `decode_and_crop_jpeg` was measured here to be slower on
    4:4:4 JPEGs and, on the 4:2:0 JPEGs `prepare` writes (twice as fast to decode), to differ from the cropped
    decode by up to 35 levels at the crop's edges (chroma upsampling), so it would not give the paper's crops.
    """
    dataset = _epoch_batches(source, stats, batch_size, augmentation=augmentation, shuffle_buffer=shuffle_buffer,
                             seed=seed, epoch=epoch, skip_batches=skip_batches, steps=steps,
                             deterministic=deterministic, input_context=input_context, counter=counter, limit=limit)
    return _train_options(dataset.map(lambda positions, images, labels: (images, labels)), deterministic)


def train_epochs(position: Callable[[], tuple[int, int, int]], source: RecordsSource, stats: Stats, batch_size: int,
                 **kwargs) -> tf.data.Dataset:
    """`train_dataset` for the (epoch, skip_batches, skip_unreadable) that `position()` returns when an iteration
    starts: Keras iterates a dataset afresh every epoch, so a callback that moves the position at each epoch's begin
    (`alexnet_tf.training.backup.EpochPosition`) makes each pass the right epoch, resumed ones included. (Asked from
    Python at iteration time: a tf.Variable would be captured by value when Keras distributes the dataset.)
    With a `counter`, each batch sets `counter.consumed` as the training step takes it."""
    current = tf.data.Dataset.from_generator(lambda: iter([position()]),
                                             output_signature=tf.TensorSpec([3], tf.int64))
    dataset = current.flat_map(lambda at: _epoch_batches(source, stats, batch_size, epoch=at[0],
                                                         skip_batches=at[1], skip_unreadable=at[2], **kwargs))
    counter = kwargs.get("counter")

    def taken(positions, images, labels):
        if counter is not None:
            counter.consumed.assign(tf.reduce_max(positions) + 1)
        return images, labels

    return _train_options(dataset.map(taken), kwargs.get("deterministic", False))


def eval_dataset(
    source: RecordsSource,
    stats: Stats,
    batch_size: int,
    *,
    ten_crop: bool = False,
    with_filenames: bool = False,
    counter: SkipCounter | None = None,
    crop_size: int = ops.CROP_SIZE,
) -> tf.data.Dataset:
    """(images, labels) in file order: the centre S = `crop_size` crop [B, S, S, 3], or with `ten_crop` the paper's
    10 crops [B, 10, S, S, 3]; mean-subtracted float32. `with_filenames` adds a third element."""
    size = crop_size
    square = _decode_square(source)
    centre = ops.subtract_mean(ops.central_crop(size)(stats.mean_image))  # crop first: 1/1.3 of the float work
    centre_mean = ops.subtract_mean(stats.mean_image)

    def example(serialized):
        parsed = records.parse(serialized, source.label_offset)
        if counter is not None:
            counter.entered.assign_add(1)
        image = square(parsed["image"])
        if ten_crop:
            image = ops.ten_crops(size)(centre_mean(image))
        else:
            image = centre(ops.central_crop(size)(image))
        outputs = (image, parsed["label"])
        return outputs + (parsed["filename"],) if with_filenames else outputs

    dataset = _records(source, shuffle_seed=None, deterministic=True, input_context=None)
    dataset = dataset.map(example, num_parallel_calls=parallel_calls(), deterministic=True)
    dataset = _drop_unreadable(dataset, counter)
    return _fixed_parallelism(dataset.batch(batch_size).prefetch(PREFETCH_BATCHES))


def images_dataset(source: RecordsSource, batch_size: int) -> tf.data.Dataset:
    """(uint8 256x256 images, labels, filenames) in file order, for pictures and feature extraction."""
    square = _decode_square(source)

    def example(serialized):
        parsed = records.parse(serialized, source.label_offset)
        return square(parsed["image"]), parsed["label"], parsed["filename"]

    dataset = _records(source, shuffle_seed=None, deterministic=True, input_context=None)
    dataset = dataset.map(example, num_parallel_calls=parallel_calls(), deterministic=True).ignore_errors()
    return _fixed_parallelism(dataset.batch(batch_size).prefetch(PREFETCH_BATCHES))


def _drop_unreadable(dataset: tf.data.Dataset, counter: SkipCounter | None) -> tf.data.Dataset:
    dataset = dataset.ignore_errors()
    if counter is None:
        return dataset

    def delivered(*element):
        counter.delivered.assign_add(1)
        return element

    return dataset.map(delivered)


def load_stats(source: RecordsSource) -> tuple[Stats, str]:
    """The data set's own statistics (stats.npz beside the shards), else the ImageNet values; and which it was."""
    if source.stats_path is not None:
        return Stats.load(source.stats_path), f"statistics from {source.stats_path}"
    return Stats.imagenet(), (
        f"{source.uri} has no stats.npz: using the widely used ImageNet mean and PCA lighting values instead"
    )

