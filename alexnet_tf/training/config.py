"""Every training setting in one frozen config (model / data / train), with named presets and a JSON/YAML round trip.

Presets:
    paper  Krizhevsky et al. 2012 as written: batch 128, PaperSGD lr 0.01 / momentum 0.9 / decay 5e-4, paper init,
           lr divided by 10 when validation error stops improving (at most 3 times), 90 epochs. The default for
           real data sets:  alexnet-tf train --data tfds:imagenet2012 --manual-dir ~/imagenet
    demo   The built-in demo set on a 2-core CPU in under 10 minutes (see DEMO_NOTES):  alexnet-tf train
    finetune  Fine-tuning trained weights on a small data set (see FINETUNE_NOTES); the default with --init-from:
           alexnet-tf train --init-from runs/demo --data folder:~/photos
    smoke  A few steps on a sliver of the demo set, for tests:  alexnet-tf train --preset smoke
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from alexnet_tf.network.model import INITS, LRN_VARIANTS, VARIANTS
from alexnet_tf.training import finetune
from alexnet_tf.training.execution import JIT_CHOICES, PRECISIONS

SCHEDULES = ("plateau", "step", "constant")
PARALLEL = ("none", "towers", "data")
STRATEGIES = ("default", "multi_worker")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    init: str = "paper"  # paper | he | caffe (see AlexNet)
    lrn: str = "paper"  # paper | cuda-convnet | caffe
    variant: str = "paper"  # paper (224 crops, LRN per tower) | caffe (bvlc_alexnet: 227 crops, LRN across towers)
    dropout: float = 0.5  # after fc6 and fc7
    input_scale: float = 1.0  # multiplies the mean-subtracted pixels before conv1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "demo"  # demo | folder:DIR | records:DIR | tfds:NAME[:SPLIT]
    prepared_dir: str | None = None  # where a non-records source is prepared once (default: the cache)
    train_split: str = "train"
    validation_split: str = "validation"  # "" trains without validation
    limit_train: int | None = None  # use only the first N training shards' worth of examples (smoke runs)
    manual_dir: str | None = None  # tfds manual downloads (imagenet2012)
    data_dir: str | None = None  # tfds data directory
    label_offset: int | None = None  # records: subtract from stored labels
    num_classes: int | None = None  # records without a manifest
    flip: bool = True  # random horizontal mirror
    pca_std: float = 0.1  # PCA lighting alpha std (0 switches it off)
    shuffle_buffer: int = 10_000
    seed: int | None = None  # fixes the data order and augmentation (with deterministic=True: bit-exact)
    deterministic: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # global batch (split across replicas)
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4  # coupled, kernels only (PaperSGD)
    epochs: int = 90
    schedule: str = "plateau"  # plateau: lr/10 when val top-1 error stalls; step: lr/10 every step_epochs
    plateau_patience: int = 4  # epochs without improvement before a drop
    max_drops: int = 3  # the paper divided the learning rate three times
    step_epochs: int = 30
    warmup_epochs: float = 0.0  # linear warm-up from lr/10 (not in the paper; the demo needs it)
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 | auto (fastest native, see execution.py)
    parallel: str = "none"  # none | towers (one tower per GPU) | data (MirroredStrategy)
    strategy: str = "default"  # default | multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG)
    jit_compile: str = "auto"  # XLA: on | off | auto (timed once per machine: XLA wins on some CPUs, graph on others)
    steps_per_epoch: int | None = None  # None: one pass over the training split
    validation_steps: int | None = None
    validation_every: int = 1  # validate every N epochs (and always after the last); plateau needs 1
    backup_minutes: float = 10.0  # wall time between crash-recovery backups (and one at every epoch's end)
    backup_every: int | None = None  # steps between backups instead of minutes
    log_seconds: float = 30.0  # stdout not a terminal (a log): a progress line every N s within an epoch; 0: off
    seed: int = 0  # weight initialisation
    init_from: str | None = None  # a run directory or .keras file whose weights the run starts from (finetune.py)
    init_from_sha256: str | None = None  # recorded by the run: SHA-256 of the source's weights
    freeze: str = ""  # paper layers whose weights stay fixed: conv1..conv5, fc6, fc7, or "conv" for conv1-conv5


@dataclasses.dataclass(frozen=True)
class Config:
    preset: str = "paper"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        return Config().override(values)

    def override(self, values: dict[str, Any]) -> Config:
        """A copy with `values` applied: nested dicts ({"train": {"epochs": 5}}) or dotted keys ("train.epochs")."""
        nested: dict[str, Any] = {}
        for key, value in values.items():
            if "." in key:
                section, _, name = key.partition(".")
                nested.setdefault(section, {})[name] = value
            elif isinstance(value, dict):
                nested.setdefault(key, {}).update(value)
            else:
                nested[key] = value
        changes: dict[str, Any] = {}
        for key, value in nested.items():
            if key == "preset":
                changes["preset"] = value
                continue
            if key not in ("model", "data", "train"):
                raise ValueError(f"unknown config section {key!r}: expected model, data or train")
            section = getattr(self, key)
            known = {f.name: f for f in dataclasses.fields(section)}
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown {key} setting(s) {unknown}; known: {sorted(known)}")
            changes[key] = dataclasses.replace(section, **{k: _coerce(known[k], v) for k, v in value.items()})
        return dataclasses.replace(self, **changes).validate()

    def validate(self) -> Config:
        """Raise ValueError naming the first setting that cannot work."""
        m, d, t = self.model, self.data, self.train
        checks = [
            (m.init in INITS, f"model.init must be one of {INITS}"),
            (m.lrn in LRN_VARIANTS, f"model.lrn must be one of {tuple(LRN_VARIANTS)}"),
            (m.variant in VARIANTS, f"model.variant must be one of {tuple(VARIANTS)}"),
            (0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
            (m.input_scale > 0, "model.input_scale must be > 0"),
            (d.pca_std >= 0, "data.pca_std must be >= 0"),
            (d.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1"),
            (not d.deterministic or d.seed is not None, "data.deterministic needs data.seed"),
            (t.batch_size >= 1, "train.batch_size must be >= 1"),
            (t.learning_rate > 0, "train.learning_rate must be > 0"),
            (0.0 <= t.momentum < 1.0, "train.momentum must be in [0, 1)"),
            (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
            (t.epochs >= 1, "train.epochs must be >= 1"),
            (t.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}"),
            (t.precision in (*PRECISIONS, "auto"), f"train.precision must be auto or one of {PRECISIONS}"),
            (t.jit_compile in JIT_CHOICES, f"train.jit_compile must be one of {JIT_CHOICES}"),
            (t.parallel in PARALLEL, f"train.parallel must be one of {PARALLEL}"),
            (t.strategy in STRATEGIES, f"train.strategy must be one of {STRATEGIES}"),
            (t.warmup_epochs >= 0, "train.warmup_epochs must be >= 0"),
            (t.backup_every is None or t.backup_every >= 1, "train.backup_every must be >= 1"),
            (t.backup_minutes > 0, "train.backup_minutes must be > 0"),
            (t.validation_every >= 1, "train.validation_every must be >= 1"),
            (t.schedule != "plateau" or t.validation_every == 1,
             "the plateau schedule watches the validation error every epoch: train.validation_every must be 1"),
            (t.steps_per_epoch is None or t.steps_per_epoch >= 1, "train.steps_per_epoch must be >= 1"),
            (not t.freeze or t.init_from, "train.freeze holds trained layers fixed: it needs train.init_from"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        finetune.freeze_names(t.freeze)  # raises on an unknown layer name
        return self


_SWITCHES = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Turn command-line strings into the field's type ("5" -> 5, "none" -> None, "false" -> False)."""
    if field.name == "jit_compile" and str(value).lower() in _SWITCHES:
        return _SWITCHES[str(value).lower()]  # runs written before "auto" existed stored a bool
    if not isinstance(value, str):
        return value
    kind = str(field.type)
    if value.lower() in ("none", "null") and "None" in kind:
        return None
    if kind.startswith("bool"):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{field.name}: expected true or false, got {value!r}")
    try:
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError:
        raise ValueError(f"{field.name}: expected a number, got {value!r}") from None
    return value


DEMO_NOTES = """\
The demo preset and the demo classes were designed together (measured on a 2-core CPU): from scratch, the paper's
init (std 0.01, biases 1) on 0-255 inputs leaves the loss flat for hundreds of steps, as Caffe reported, and
He init on raw pixels diverges. He init (fc8 N(0, 0.01)) on pixels scaled by 1/64, batch 32, lr 0.01 after a short
linear warm-up, and no dropout (in ~200 steps dropout only slows learning; there is too little training to
overfit) learn the ten shapes within the budget (lr 0.02 was no faster). Validating only after the last epoch
saves a minute of it. LRN, the towers, PaperSGD and the augmentation stay the paper's.
"""

FINETUNE_NOTES = """\
The finetune preset starts from trained weights on a small data set (measured with the demo-transfer set, README):
lr 0.001, a tenth of the demo's, because the copied layers are already good and a large step would undo them
while fc8 is still random; dropout 0.5 as in the paper, because a few hundred images are easy to overfit; batch
32 and 10 epochs, since small sets have few steps per epoch; validation after every epoch, so best.keras is the
best epoch. Pixels scaled by 1/64 and He init as in the demo preset, so that training the same preset from scratch
is a fair comparison; with --init-from, the source's input scale and LRN constants are adopted (ARCHITECTURE_KEYS).
"""

PRESETS: dict[str, Config] = {
    "paper": Config("paper", data=DataConfig(dataset="tfds:imagenet2012")),
    "demo": Config(
        "demo",
        model=ModelConfig(init="he", input_scale=1 / 64, dropout=0.0),
        data=DataConfig(dataset="demo", seed=2012),
        train=TrainConfig(batch_size=32, learning_rate=0.01, epochs=3, schedule="constant", warmup_epochs=0.25,
                          validation_every=3, precision="auto"),
    ),
    "finetune": Config(
        "finetune",
        model=ModelConfig(init="he", input_scale=1 / 64, dropout=0.5),
        data=DataConfig(dataset="demo-transfer", seed=2012),
        train=TrainConfig(batch_size=32, learning_rate=0.001, epochs=10, schedule="constant", validation_every=1,
                          precision="auto"),
    ),
    "smoke": Config(
        "smoke",
        model=ModelConfig(init="he", input_scale=1 / 64),
        data=DataConfig(dataset="demo", seed=0, shuffle_buffer=64),
        train=TrainConfig(batch_size=4, learning_rate=0.001, epochs=1, steps_per_epoch=3, validation_steps=2,
                          schedule="constant", jit_compile="off", backup_every=2),
    ),
}


def preset(name: str) -> Config:
    """A named preset (paper, demo, finetune, smoke)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose from {sorted(PRESETS)}")
    return PRESETS[name]


def load(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a JSON or YAML config file (a partial config: only the settings it names)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of sections, got {type(values).__name__}")
    return values


def default_run_dir(preset_name: str) -> str:
    """Where a run goes when no --run-dir is given: runs/<preset>."""
    return str(pathlib.Path("runs") / preset_name)


def resolve(values: dict[str, Any], *, preset_name: str | None = None, config_file: str | pathlib.Path | None = None,
            run_dir: str | None = None, fresh: bool = False) -> Config:
    """A run's settings, later sources winning: the preset (named, else finetune with `train.init_from`, demo for
    the demo data, paper otherwise), an --init-from source's architecture, the config file, then `values`
    (dotted keys such as "train.epochs"). Raises ValueError or FileNotFoundError naming a bad setting or source."""
    file_values = load(config_file) if config_file else {}
    init_from = values.get("train.init_from") or file_values.get("train", {}).get("init_from")
    data = values.get("data.dataset") or file_values.get("data", {}).get("dataset")
    name = preset_name or file_values.get("preset") or (
        "finetune" if init_from else "demo" if data in (None, "demo") else "paper")
    base = preset(name)
    if init_from:  # the source's architecture wins over the preset's; the user's own settings win over both
        resumable = None if fresh else (run_dir or default_run_dir(name))
        base = base.override(finetune.adopted_architecture(init_from, resumable))
    return base.override(file_values).override(values)
