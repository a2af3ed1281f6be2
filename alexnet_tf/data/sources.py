"""Open any data set by URI: `demo`, `folder:DIR`, `records:DIR`, `tfds:NAME[:split]` (one function, `open_dataset`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
from collections.abc import Iterator

from alexnet_tf.data import demo, records
from alexnet_tf.process.progress import progress_bar

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".jpe"}
SPLITS = ("train", "validation")
HOLDOUT_PERCENT = 10
"""A flat `folder:DIR` (no train/ and validation/ subfolders) keeps this share of each class for validation."""


class DatasetError(ValueError):
    """A data set that does not exist, or is not what its URI says; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One raw example: encoded image bytes, a 0-based label, a name to report it by, and why it could not be
    read (empty when it could)."""

    data: bytes
    label: int
    name: str
    error: str = ""


@dataclasses.dataclass
class Source:
    """One split of a data set: its class names and a way to read its raw examples."""

    uri: str
    split: str
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def examples(self, start: int = 0, stop: int | None = None) -> Iterator[Example]:
        """The examples with index in [start, stop), in the source's fixed order."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


@dataclasses.dataclass
class FolderSource(Source):
    """Image files in `<dir>/<class>/<image>` (classes sorted by name), in a fixed shuffled order so that
    consecutive examples (and so `prepare`'s shards) mix the classes."""

    files: list[tuple[pathlib.Path, int]] = dataclasses.field(default_factory=list)

    def examples(self, start: int = 0, stop: int | None = None) -> Iterator[Example]:
        for path, label in self.files[start:stop]:
            try:
                yield Example(path.read_bytes(), label, str(path))
            except OSError as error:
                yield Example(b"", label, str(path), f"unreadable: {error.strerror or error}")

    def __len__(self) -> int:
        return len(self.files)


@dataclasses.dataclass
class RecordsSource(Source):
    """TFRecord shards in the tensorflow/models ImageNet layout, with our manifest and stats.npz when present."""

    directory: pathlib.Path = pathlib.Path(".")
    files: list[pathlib.Path] = dataclasses.field(default_factory=list)
    label_offset: int = 0
    manifest: dict = dataclasses.field(default_factory=dict)

    @property
    def prepared_size(self) -> int | None:
        """256 for shards our `prepare` wrote (already resized and cropped), None for raw images."""
        return self.manifest.get("image_size")

    @property
    def stats_path(self) -> pathlib.Path | None:
        path = self.directory / "stats.npz"
        return path if path.is_file() else None

    def examples(self, start: int = 0, stop: int | None = None) -> Iterator[Example]:
        import tensorflow as tf

        dataset = tf.data.TFRecordDataset([str(f) for f in self.files]).skip(start)
        if stop is not None:
            dataset = dataset.take(stop - start)
        for serialized in dataset:
            example = records.parse(serialized, self.label_offset)
            yield Example(example["image"].numpy(), int(example["label"]), example["filename"].numpy().decode())

    def __len__(self) -> int:
        """From the manifest; without one (shards from other tools), by counting the records once."""
        counts = self.manifest.setdefault("counts", {})
        if self.split not in counts:
            import tensorflow as tf

            files = [str(f) for f in self.files]
            counts[self.split] = int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))
        return int(counts[self.split])


@dataclasses.dataclass
class TfdsSource(Source):
    """A tensorflow-datasets data set with an `image` and a `label` feature, read as encoded bytes."""

    name: str = ""
    data_dir: str | None = None
    tfds_split: str = "train"
    size: int = 0

    def examples(self, start: int = 0, stop: int | None = None) -> Iterator[Example]:
        import tensorflow_datasets as tfds

        dataset = tfds.load(self.name, split=self.tfds_split, data_dir=self.data_dir, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()}, download=False)
        dataset = dataset.skip(start)
        if stop is not None:
            dataset = dataset.take(stop - start)
        for index, example in enumerate(dataset, start):
            name = example["file_name"].numpy().decode() if "file_name" in example else f"{self.name}/{index}"
            yield Example(example["image"].numpy(), int(example["label"]), name)

    def __len__(self) -> int:
        return self.size


def open_dataset(
    uri: str,
    split: str = "train",
    *,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    label_offset: int | None = None,
    num_classes: int | None = None,
    progress: bool = False,
) -> Source:
    """Open one split of the data set named by `uri` (`progress`: a bar over a folder set's class folders while
    they are listed).

    - `demo`: the built-in rendered-shapes set, made on first use under `demo.cache_root()`.
    - `demo-transfer`: the small second built-in set (other shapes, 30 + 20 images per class) for fine-tuning.
    - `folder:DIR`: `DIR/train/<class>/*` and `DIR/validation/<class>/*`, or a flat `DIR/<class>/*` of which a fixed
      10% of each class (by file-name hash) is the validation split.
    - `records:DIR`: `DIR/<split>-NNNNN-of-NNNNN` shards; labels are made 0-based with the manifest's label offset,
      or `label_offset` (tensorflow/models' ImageNet shards are 1-based: pass 1), else 0.
    - `tfds:NAME[:SPLIT]`: a tensorflow-datasets set (`tfds:imagenet2012` needs `manual_dir`, the folder holding
      the ImageNet tar files); SPLIT overrides `split`, e.g. `tfds:imagenet2012:validation[:10%]`.
    """
    kind, _, rest = uri.partition(":")
    if uri == "demo":
        return _open_folder(demo.ensure_demo(), split, uri)
    if uri == "demo-transfer":
        return _open_folder(demo.ensure_transfer(), split, uri)
    if kind == "folder" and rest:
        return _open_folder(pathlib.Path(rest).expanduser(), split, uri, progress)
    if kind == "records" and rest:
        return _open_records(pathlib.Path(rest).expanduser(), split, uri, label_offset, num_classes)
    if kind == "tfds" and rest:
        name, _, tfds_split = rest.partition(":")
        return _open_tfds(name, tfds_split or split, split, uri, manual_dir, data_dir)
    raise DatasetError(
        f"unknown data set {uri!r}: use 'demo', 'demo-transfer', 'folder:DIR', 'records:DIR' or 'tfds:NAME[:SPLIT]'"
    )


def _class_folders(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _listed(folders: list[pathlib.Path], progress: bool, what: str) -> Iterator[list[pathlib.Path]]:
    """Each folder's images, in order; with `progress`, a bar over the folders (listing ImageNet's 1,000 class
    folders of 1.28M files is the slow first step of `prepare`, longer still on a network disk)."""
    bar = None
    if progress:
        print(f"listing {what}")
        bar = progress_bar(len(folders), "class folder")
    for index, folder in enumerate(folders):
        images = _images(folder)
        if bar is not None:
            bar.update(index + 1)
        yield images


def _in_holdout(path: pathlib.Path) -> bool:
    return int(hashlib.sha1(path.name.encode()).hexdigest(), 16) % 100 < HOLDOUT_PERCENT


def _open_folder(directory: pathlib.Path, split: str, uri: str, progress: bool = False) -> FolderSource:
    if not directory.is_dir():
        raise DatasetError(f"{uri}: {directory} is not a directory")
    what = f"{uri} ({split})"
    if (directory / "train").is_dir():  # split layout
        split_dir = directory / split
        if not split_dir.is_dir():
            raise DatasetError(f"{uri}: there is no '{split}' split ({split_dir} does not exist)")
        classes = [p.name for p in _class_folders(directory / "train")]
        folders = {p.name: p for p in _class_folders(split_dir)}
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DatasetError(f"{uri}: classes {unknown} of '{split}' are not in 'train'")
        present = [(label, folders[name]) for label, name in enumerate(classes) if name in folders]
        listed = _listed([folder for _, folder in present], progress, what)
        files = [(f, label) for (label, _), images in zip(present, listed) for f in images]
    else:  # flat layout: hold out a fixed share of each class
        if split not in SPLITS:
            raise DatasetError(f"{uri}: a flat folder has only the splits {SPLITS}, not '{split}'")
        folders = _class_folders(directory)
        classes = [p.name for p in folders]
        files = [(f, label) for label, images in enumerate(_listed(folders, progress, what)) for f in images
                 if _in_holdout(f) == (split == "validation")]
    if len(classes) < 2:
        raise DatasetError(f"{uri}: expected at least two class folders in {directory}, found {len(classes)}")
    if not files:
        raise DatasetError(f"{uri}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the '{split}' split")
    order = random.Random(0).sample(range(len(files)), len(files))
    return FolderSource(uri, split, classes, [files[i] for i in order])


def _open_records(directory: pathlib.Path, split: str, uri: str, label_offset: int | None,
                  num_classes: int | None) -> RecordsSource:
    if not directory.is_dir():
        raise DatasetError(f"{uri}: {directory} is not a directory")
    try:
        files = records.list_shards(directory, split)
    except (FileNotFoundError, ValueError) as error:
        raise DatasetError(f"{uri}: {error}") from None
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    classes = manifest.get("classes")
    if classes is None:
        if num_classes is None:
            raise DatasetError(f"{uri}: no manifest.json, so the number of classes is unknown: pass --num-classes")
        classes = [str(i) for i in range(num_classes)]
    if label_offset is None:
        label_offset = int(manifest.get("label_offset", 0))
    return RecordsSource(uri, split, list(classes), directory, files, label_offset, manifest)


def _open_tfds(name: str, tfds_split: str, split: str, uri: str, manual_dir: str | None,
               data_dir: str | None) -> TfdsSource:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names
        raise DatasetError(f"{uri}: tensorflow-datasets has no data set {name!r} ({error})") from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DatasetError(f"{uri}: needs 'image' and 'label' features, has {sorted(features.keys())}")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as error:
        hint = " (imagenet2012 needs --manual-dir: the folder with ILSVRC2012_img_*.tar)" if "imagenet" in name else ""
        raise DatasetError(f"{uri}: could not prepare the data set{hint}: {error}") from None
    base_split = tfds_split.split("[")[0]
    known = builder.info.splits
    if known and base_split not in known:
        raise DatasetError(f"{uri}: no split {base_split!r}; it has {sorted(known.keys())}")
    if known:
        size = known[tfds_split].num_examples
    else:  # split metadata missing (e.g. under tfds.testing.mock_data): count the examples
        dataset = builder.as_dataset(split=tfds_split, decoders={"image": tfds.decode.SkipDecoding()})
        size = int(dataset.cardinality())
        size = size if size >= 0 else sum(1 for _ in dataset)
    return TfdsSource(uri, split, list(features["label"].names), name, data_dir, tfds_split, size)
