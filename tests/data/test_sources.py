"""One opener for every data set URI, with errors that say what to do."""

import pytest

from alexnet_tf.data import demo
from alexnet_tf.data.prepare import prepare
from alexnet_tf.data.sources import DatasetError, FolderSource, RecordsSource, open_dataset


def test_folder_with_splits(tiny_demo):
    train = open_dataset(f"folder:{tiny_demo}", "train")
    assert isinstance(train, FolderSource)
    assert train.classes == sorted(demo.CLASSES) and len(train) == 60
    labels = {example.label for example in train.examples()}
    assert labels == set(range(10))
    example = next(train.examples())
    assert example.name.split("/")[-2] == train.classes[example.label]
    assert len(open_dataset(f"folder:{tiny_demo}", "validation")) == 20


def test_flat_folder_holds_out_a_fixed_tenth(tiny_demo):
    flat = tiny_demo / "train"
    train, validation = (open_dataset(f"folder:{flat}", split) for split in ("train", "validation"))
    names = {e.name for e in train.examples()}
    assert not names & {e.name for e in validation.examples()}
    assert len(train) + len(validation) == 60 and 0 < len(validation) < 20


@pytest.mark.parametrize("layout", ["split", "flat"])
def test_listing_a_folder_shows_progress_over_its_class_folders(tiny_demo, capsys, layout):
    """The listing of a large folder set is slow (1,000 class folders for ImageNet): prepare shows a bar."""
    root = tiny_demo if layout == "split" else tiny_demo / "train"
    quiet = open_dataset(f"folder:{root}", "train")
    assert capsys.readouterr().out == ""  # off unless asked for
    listed = open_dataset(f"folder:{root}", "train", progress=True)
    out = capsys.readouterr().out
    assert f"listing folder:{root} (train)" in out and "10/10" in out and "class folder" in out
    assert [e.name for e in listed.examples()] == [e.name for e in quiet.examples()]


def test_records_with_manifest_and_offset(tiny_demo, tmp_path):
    prepare(f"folder:{tiny_demo}", tmp_path / "r", progress=False)
    source = open_dataset(f"records:{tmp_path / 'r'}", "validation")
    assert isinstance(source, RecordsSource) and source.prepared_size == 256 and len(source) == 20
    assert source.classes == sorted(demo.CLASSES) and source.stats_path is not None
    assert sorted(e.label for e in source.examples()) == sorted(list(range(10)) * 2)
    shifted = open_dataset(f"records:{tmp_path / 'r'}", "validation", label_offset=1)
    assert min(e.label for e in shifted.examples()) == -1


def test_records_without_manifest_need_the_class_count(tiny_demo, tmp_path):
    prepare(f"folder:{tiny_demo}", tmp_path / "r", progress=False)
    (tmp_path / "r" / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="--num-classes"):
        open_dataset(f"records:{tmp_path / 'r'}", "train")
    assert open_dataset(f"records:{tmp_path / 'r'}", "train", num_classes=10).num_classes == 10


@pytest.mark.parametrize("uri, message", [
    ("imagenet", "unknown data set"),
    ("folder:/does/not/exist", "is not a directory"),
    ("records:/does/not/exist", "is not a directory"),
    ("tfds:no_such_dataset_anywhere", "tensorflow-datasets has no data set"),
])
def test_bad_uris_say_what_is_wrong(uri, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(uri)


def test_missing_split_and_empty_folders(tiny_demo, tmp_path):
    with pytest.raises(DatasetError, match="no 'test' split"):
        open_dataset(f"folder:{tiny_demo}", "test")
    (tmp_path / "one").mkdir()
    with pytest.raises(DatasetError, match="at least two class folders"):
        open_dataset(f"folder:{tmp_path}", "train")
