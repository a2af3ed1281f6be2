"""The fit loop behind `alexnet-tf train`: data, strategy, model, Keras callbacks, and the run directory.

A run directory holds everything a run makes and needs again:
    config.json        the resolved config            labels.txt, stats.npz   the data set's, copied
    checkpoints/       the latest crash-safe backup (weights, optimizer, exact position; `alexnet_tf.training.backup`)
    best.keras         the epoch with the lowest validation top-1 error      final.keras   the last epoch
    best.json          best.keras's epoch and error (so a resumed run keeps the best across crashes)
    history.csv        one row per epoch              logs/                   TensorBoard
    summary.json       final errors, wall time and the paths above
Running the same command again resumes from the last backup at the batch it was taken; a larger --epochs
continues a finished run.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import shutil
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.data import demo, pipeline
from alexnet_tf.data.prepare import prepare
from alexnet_tf.data.sources import DatasetError, RecordsSource, open_dataset
from alexnet_tf.network import placement
from alexnet_tf.network.model import VARIANTS, build_alexnet
from alexnet_tf.network.optimizer import PaperSGD
from alexnet_tf.process import atomic, disk
from alexnet_tf.process.progress import live_display
from alexnet_tf.training import backup, execution, finetune, preemption
from alexnet_tf.training.callbacks import (
    AtomicBestModel,
    HistoryFile,
    LogLines,
    PlateauSchedule,
    SkippedRecords,
    StopAfterEpoch,
    save_keras_atomic,
    schedule_callbacks,
)
from alexnet_tf.training.config import Config

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, labels outside the class range, mismatched checkpoint): says why."""


@dataclasses.dataclass
class TrainResult:
    run_dir: pathlib.Path
    history: dict[str, list[float]]
    summary: dict


# === Data ===
def prepared_location(config: Config) -> pathlib.Path:
    """Where `prepared_uri` keeps a non-`records:` data set's prepared records (prepared or not yet)."""
    if config.data.prepared_dir:
        return pathlib.Path(config.data.prepared_dir)
    uri = config.data.dataset
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri).strip("_")[:60]
    return demo.cache_root() / "prepared" / f"{slug}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}"


def prepared_uri(config: Config, *, progress: bool = True) -> str:
    """A `records:` URI for the configured data set, running the paper's offline step once for other sources."""
    uri = config.data.dataset
    if uri.startswith("records:"):
        return uri
    out = prepared_location(config)
    if not (out / "manifest.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        # Several workers on one machine share the cache: the first prepares, the others wait and reuse.
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "manifest.json").is_file():
                splits = tuple(s for s in (config.data.train_split, config.data.validation_split) if s)
                prepare(uri, out, splits=splits, progress=progress, manual_dir=config.data.manual_dir,
                        data_dir=config.data.data_dir, label_offset=config.data.label_offset,
                        num_classes=config.data.num_classes)
    return f"records:{out}"


def open_splits(config: Config, uri: str) -> tuple[RecordsSource, RecordsSource | None]:
    kwargs = {"label_offset": config.data.label_offset, "num_classes": config.data.num_classes}
    train_source = open_dataset(uri, config.data.train_split, **kwargs)
    validation = None
    if config.data.validation_split:
        try:
            validation = open_dataset(uri, config.data.validation_split, **kwargs)
        except DatasetError as error:
            log.warning("no validation split (%s): training without validation", error)
    return train_source, validation


# === Strategy and placement ===
def make_strategy(config: Config) -> tuple[tf.distribute.Strategy, tuple[str, str] | None]:
    """The tf.distribute strategy and the tower devices the config asks for."""
    towers = None
    if config.train.parallel == "towers":
        towers = placement.tower_devices()
        if towers is None:
            print("--parallel towers: fewer than two GPUs, so both towers share one device")
    if config.train.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise TrainingError("--strategy multi_worker reads the cluster from TF_CONFIG, which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy(), towers
    if config.train.parallel == "data":
        return tf.distribute.MirroredStrategy(), towers
    return tf.distribute.get_strategy(), towers


def validation_epochs(epochs: int, every: int) -> list[int]:
    """The 1-based epochs after which to validate: every `every`-th, and always the last (Keras' validation_freq)."""
    return sorted({*range(every, epochs + 1, every), epochs})


# === The run ===
def _check_run_dir(run_dir: pathlib.Path, config: Config) -> Config | None:
    """The config to resume with when run_dir holds a run of this config (settings asked as "auto" take the
    values the run chose), None when it holds no run; raise when it holds a different one."""
    saved = run_dir / "config.json"
    if not saved.is_file():
        return None
    previous = json.loads(saved.read_text())
    ignore = ("epochs", "backup_every", "backup_minutes", "validation_every", "log_seconds")  # --epochs N continues
    chosen = {}
    for section in ("model", "data", "train"):
        for key, value in previous.get(section, {}).items():
            current = getattr(getattr(config, section), key, value)
            recorded = key == "init_from_sha256" or (section, key) == ("data", "seed")
            if current == "auto" or (recorded and current is None):
                chosen[f"{section}.{key}"] = value  # a run keeps the path, data seed and source it recorded
            elif key not in ignore and current != value:
                raise TrainingError(
                    f"{run_dir} holds a run with {section}.{key}={value!r}, not {current!r}: "
                    "use another --run-dir, or --fresh to start this one over"
                )
    return config.override(chosen)


def _read_source(config: Config) -> finetune.Source:
    """The --init-from source's weights, checked against the hash the run recorded when it started."""
    try:
        source = finetune.read_source(config.train.init_from)
        source.check_architecture(config.model)
    except finetune.SourceError as error:
        raise TrainingError(str(error)) from None
    recorded = config.train.init_from_sha256
    if recorded and recorded != source.sha256:
        raise TrainingError(f"--init-from {config.train.init_from}: its weights changed since this run started "
                            f"(sha256 {source.sha256[:12]}..., recorded {recorded[:12]}...): use --fresh or another "
                            "--run-dir")
    return source


def _build_model(config: Config, num_classes: int, towers, path: execution.ExecutionPath,
                 source: finetune.Source | None = None):
    """The compiled network as the config says, with the execution path's precision and XLA setting, the source's
    weights copied in and the `freeze` layers fixed."""
    model = build_alexnet(num_classes, tower_devices=towers, dropout=config.model.dropout, init=config.model.init,
                          lrn=config.model.lrn, variant=config.model.variant, input_scale=config.model.input_scale,
                          dtype=path.precision)
    if source is not None:
        finetune.copy_weights(source, model)
    finetune.freeze(model, finetune.freeze_names(config.train.freeze))
    model.compile(optimizer=PaperSGD(config.train.learning_rate, config.train.momentum, config.train.weight_decay),
                  jit_compile=path.xla)
    return model


def execution_trial(config: Config, num_classes: int, towers, replicas: int) -> tuple[list, int, dict]:
    """(candidate paths, per-replica batch, what the timings depend on besides the machine) for this run."""
    t = config.train
    paths = execution.candidates(t.precision, t.jit_compile, mixed=execution.native_mixed_precisions(),
                                 xla_allowed=replicas == 1)
    batch = max(1, t.batch_size // replicas)
    trial = {"batch": batch, "classes": num_classes, "model": dataclasses.asdict(config.model),
             "towers": list(towers or []), "freeze": config.train.freeze}
    return paths, batch, trial


def execution_cache() -> execution.PathCache:
    return execution.PathCache(demo.cache_root() / "execution-paths.json")


def choose_execution_path(config: Config, num_classes: int, towers, replicas: int) -> execution.Choice:
    """Resolve `precision` and `jit_compile` "auto" for this machine: a timed trial of each candidate the first
    time, the cached timings afterwards (`alexnet_tf.training.execution`)."""
    paths, batch, trial = execution_trial(config, num_classes, towers, replicas)

    def measure(path):
        return execution.time_path(path, lambda p: _build_model(config, num_classes, towers, p), batch,
                                   image_size=VARIANTS[config.model.variant], num_classes=num_classes)

    return execution.choose(paths, measure, cache=execution_cache(), trial=trial)


def train(
    config: Config, run_dir: str | pathlib.Path, *, fresh: bool = False, verbose: int | str = "auto"
) -> TrainResult:
    """Train AlexNet as `config` says, in `run_dir` (resuming a run of the same config found there)."""
    run_dir = pathlib.Path(run_dir)
    resumed = None if fresh else _check_run_dir(run_dir, config)
    resuming = resumed is not None
    config = resumed or config
    backups = backup.Backups(run_dir / "checkpoints")
    # A fine-tuning run reads its source once, before anything is written; after that its own backups carry on.
    source = None
    if config.train.init_from and not (resuming and backups.exists()):
        source = _read_source(config)
        config = config.override({"train.init_from_sha256": source.sha256})
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if config.data.seed is None:  # a recorded seed makes every epoch's order reproducible: resumable at any batch
        config = config.override({"data.seed": int.from_bytes(os.urandom(4), "little") >> 1})
    started = time.time()
    # Before any TF op runs: MultiWorkerMirroredStrategy configures collectives at program start-up.
    strategy, towers = make_strategy(config)

    # --- data ---
    uri = prepared_uri(config)
    train_source, validation_source = open_splits(config, uri)
    stats, stats_message = pipeline.load_stats(train_source)
    print(stats_message)
    num_classes = train_source.num_classes
    examples = len(train_source) if config.data.limit_train is None else min(config.data.limit_train,
                                                                             len(train_source))
    steps_per_epoch = config.train.steps_per_epoch or max(1, examples // config.train.batch_size)

    # --- execution path: precision and XLA, timed once per machine when "auto" ---
    replicas = strategy.num_replicas_in_sync
    if config.train.jit_compile != "off" and replicas > 1:
        print(f"XLA is off: {replicas} replicas (collectives under XLA are not supported on every device)")
    choice = choose_execution_path(config, num_classes, towers, replicas)
    config = config.override({"train.precision": choice.path.precision,
                              "train.jit_compile": "on" if choice.path.xla else "off"})

    # --- the run directory's inputs ---
    with disk.guard(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / "config.json", config.to_json())
        atomic.write_text(run_dir / "labels.txt", "\n".join(train_source.classes) + "\n")
        if train_source.stats_path is not None:
            shutil.copy(train_source.stats_path, run_dir / "stats.npz")
        else:
            stats.save(run_dir / "stats.npz")

    # --- model ---
    keras.utils.set_random_seed(config.train.seed)
    keras.mixed_precision.set_global_policy(config.train.precision)
    with strategy.scope():
        model = _build_model(config, num_classes, towers, choice.path, source)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # so a backup's optimizer slots have a home
        restored = backups.restore(model) if resuming else None
    start_epoch, start_batch = (restored["epoch"], restored["batch"]) if restored else (0, 0)
    start_unreadable = restored.get("unreadable_records", 0) if restored else 0
    if source is not None:
        # The copied weights are the run's first backup, so a crash before the first regular one resumes from
        # them, not from a random init, and the source is never needed again.
        backups.save(model, epoch=0, batch=0)
        frozen = finetune.freeze_names(config.train.freeze)
        print(f"starting from {source.path} (weights sha256 {source.sha256[:12]}...)"
              + (f"; frozen: {', '.join(frozen)}" if frozen else ""))

    # --- pipelines ---
    # Skipped records are counted per finite pass; with --steps-per-epoch the data repeats, and records still in
    # flight when an epoch ends would count as skipped, so the count is off there.
    # Several replicas need the same number of batches each: every epoch is then exactly steps_per_epoch long.
    exact_steps = config.train.steps_per_epoch or (steps_per_epoch if replicas > 1 else None)
    counter = None if exact_steps else pipeline.SkipCounter()
    position = backup.EpochPosition(start_epoch, start_batch, start_unreadable)

    def train_data(input_context=None):
        return pipeline.train_epochs(
            position, train_source, stats, config.train.batch_size,
            augmentation=pipeline.Augmentation(crop_size=VARIANTS[config.model.variant], flip=config.data.flip,
                                               pca_std=config.data.pca_std),
            shuffle_buffer=config.data.shuffle_buffer, seed=config.data.seed, steps=exact_steps,
            deterministic=config.data.deterministic, input_context=input_context, counter=counter,
            limit=config.data.limit_train,
        )

    if replicas > 1:
        train_ds = strategy.distribute_datasets_from_function(train_data)
    else:
        train_ds = train_data()
    validation_ds = None
    if validation_source is not None:
        validation_ds = pipeline.eval_dataset(validation_source, stats, config.train.batch_size,
                                              crop_size=VARIANTS[config.model.variant])

    # --- callbacks ---
    monitor = "val_top1_error" if validation_ds is not None else "top1_error"
    schedule = schedule_callbacks(config, steps_per_epoch, monitor)
    stateful = {type(c).__name__: c for c in schedule if isinstance(c, PlateauSchedule)}
    for name, callback in stateful.items():
        if restored and name in restored.get("state", {}):
            callback.set_state(restored["state"][name])
    backup_every = backup.BackupEvery(backups, minutes=config.train.backup_minutes, steps=config.train.backup_every,
                                      start_epoch=start_epoch, start_batch=start_batch, stateful=stateful,
                                      counter=counter, batch_size=config.train.batch_size)
    requests = preemption.SignalRequests()
    callbacks = [
        backup.ExactStepCount(),
        position,
        *schedule,
        *([SkippedRecords(counter, start_epoch, start_unreadable)] if counter is not None else []),
        keras.callbacks.TerminateOnNaN(),
        AtomicBestModel(run_dir / "best.keras", monitor),
        HistoryFile(run_dir / "history.csv", start_epoch),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        backup_every,  # after the others: an epoch-end backup holds their state
        preemption.StopOnSignal(requests, backup_every, strategy),  # last: after that backup
    ]
    if verbose == "auto" and not live_display(sys.stdout) and config.train.log_seconds > 0:  # Keras: a line per epoch
        callbacks.insert(0, LogLines(steps_per_epoch, start_epoch, start_batch, interval=config.train.log_seconds))

    print(f"training {config.preset!r} preset: {examples} images, {num_classes} classes, batch "
          f"{config.train.batch_size}, {steps_per_epoch} steps x {config.train.epochs} epochs, "
          f"{choice.describe(config.train.batch_size // replicas)}, {replicas} replica(s) -> {run_dir}")
    if restored:
        print(f"resuming from the backup at epoch {start_epoch + 1}, batch {start_batch} (step {restored['step']}) "
              f"in {backups.directory}")
    # An epoch is one pass over the data, whose batch count tf.data cannot know (dropped unreadable records):
    # Keras 3 then warns at the end of the first pass that the input "ran out of data". It did not.
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
    fit = dict(validation_data=validation_ds, epochs=config.train.epochs, shuffle=False,
               validation_steps=config.train.validation_steps,
               validation_freq=validation_epochs(config.train.epochs, config.train.validation_every),
               verbose=verbose if verbose != "auto" else (1 if live_display(sys.stdout) else 2))
    # The rest of an interrupted epoch is fitted on its own: Keras takes the length of every epoch of a fit from
    # its first pass, and that one is shorter than a whole epoch.
    phases = [(start_epoch, [*callbacks, StopAfterEpoch()]), (start_epoch + 1, callbacks)] if start_batch else \
        [(start_epoch, callbacks)]
    history: dict[str, list] = {}
    stopped = None
    with requests:  # SIGTERM / SIGINT from here on: a backup at the step, then `preemption.Preempted`
        try:
            for index, (initial_epoch, phase_callbacks) in enumerate(phases):
                if index and (initial_epoch >= config.train.epochs or not np.isfinite(history["loss"][-1])):
                    break
                model.stop_training = False
                run = model.fit(train_ds, initial_epoch=initial_epoch, callbacks=phase_callbacks, **fit)
                for key, values in run.history.items():
                    history.setdefault(key, []).extend(values)
        except preemption.Preempted as stop:
            stopped = stop.with_traceback(None)  # raised below, without the frames that hold the data iterators
        except tf.errors.InvalidArgumentError as error:
            message = str(error)
            match = re.search(r"label value of (-?\d+).*?\[0, (\d+)\)", message, re.S)
            if match:
                raise TrainingError(
                    f"class count mismatch: the data has label {match[1]}, but the model has {match[2]} classes; "
                    "check --num-classes and --label-offset (tensorflow/models ImageNet shards are 1-based)"
                ) from None
            raise
    if stopped is not None:
        gc.collect()  # the data iterators go now, not at interpreter exit (where tf.data would print an error)
        raise stopped
    losses = history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrainingError(
            f"the loss became NaN in epoch {len(losses)}: lower --learning-rate, add warm-up "
            "(--set train.warmup_epochs=1) or use --init he; the last good state is in checkpoints/"
        )

    # --- results ---
    save_keras_atomic(model, run_dir / "final.keras")
    if not (run_dir / "best.keras").exists():  # resumed after the last epoch had already finished
        shutil.copy(run_dir / "final.keras", run_dir / "best.keras")
    final = {key: values[-1] for key, values in history.items() if values}
    summary = {
        "preset": config.preset,
        "data": uri,
        "epochs_run": len(losses),
        "wall_time_s": round(time.time() - started, 1),
        "final": {k: float(v) for k, v in final.items()},
        "best_val_top1_error": min(history.get("val_top1_error", [math.nan])),
        "paths": {name: str(run_dir / name) for name in
                  ("config.json", "best.keras", "final.keras", "history.csv", "logs", "checkpoints")},
    }
    atomic.write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return TrainResult(run_dir, history, summary)


def format_summary(result: TrainResult) -> str:
    """The closing lines `alexnet-tf train` prints."""
    s = result.summary
    final = s["final"]
    lines = [f"done in {s['wall_time_s'] / 60:.1f} min ({s['epochs_run']} epoch(s) this run)"]
    for prefix, name in (("", "training"), ("val_", "validation")):
        if f"{prefix}top1_error" in final:
            lines.append(f"  {name:<10} top-1 error {final[f'{prefix}top1_error']:.2%}   "
                         f"top-5 error {final[f'{prefix}top5_error']:.2%}   loss {final[f'{prefix}loss']:.4f}")
    lines.append(f"  wrote {result.run_dir}/: best.keras, final.keras, history.csv, logs/, checkpoints/")
    lines.append(f"next: alexnet-tf evaluate {result.run_dir} && alexnet-tf export {result.run_dir}")
    return "\n".join(lines)

