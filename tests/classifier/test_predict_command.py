"""`alexnet-tf predict --model PATH`: in-process, the same table and JSON lines as the server path."""

import json

import numpy as np
import pytest

from alexnet_tf.classifier import ImageClassifier
from tests.classifier.conftest import LABELS, make_run
from tests.classifier.test_image_classifier import jpeg
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def run_and_preset(module_tmp_path):
    run_dir = module_tmp_path / "run"
    make_run(run_dir, "paper")
    preset = ImageClassifier.from_preset(run_dir).save_to_preset(module_tmp_path / "preset")
    images = module_tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(8)
    for i in range(3):
        (images / f"{i}.jpg").write_bytes(jpeg(rng.integers(0, 256, (240 + 20 * i, 300, 3), dtype=np.uint8)))
    return run_dir, preset, images


@pytest.mark.slow
def test_a_table_from_a_run_and_json_from_a_preset_agree(run_and_preset):
    run_dir, preset, images = run_and_preset
    table = run_cli("predict", str(images), "--model", str(run_dir), "--batch-size", "2", "--top", "3")
    assert table.returncode == 0, table.stderr[-3000:]
    lines = table.stdout.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == [str(images / f"{i}.jpg") for i in range(3)]
    assert table.stdout.count("%") == 9 and all(line.split()[-1] in LABELS for line in lines if line[0] == " ")
    answers = [json.loads(line) for line in run_cli("predict", str(images), "--model", str(preset), "--json",
                                                    "--top", "3").stdout.splitlines()]
    assert [a["image"] for a in answers] == [str(images / f"{i}.jpg") for i in range(3)]
    expected = ImageClassifier.from_preset(run_dir).predict(sorted(images.iterdir()), crops="ten")
    for answer, row in zip(answers, expected):
        top = np.argsort(-row, kind="stable")[:3]
        assert answer["classes"] == top.tolist() and answer["labels"] == [LABELS[c] for c in top]
        np.testing.assert_allclose(answer["scores"], row[top], atol=1e-4)
    # the first lines of the table are the first image's top 3, as in the JSON
    assert [line.split()[-1] for line in lines[1:4]] == answers[0]["labels"]


def test_errors_are_one_line_and_exit_2(run_and_preset, tmp_path):
    run_dir, _, images = run_and_preset
    (tmp_path / "bad.jpg").write_bytes(b"plain text, not an image")
    bad = run_cli("predict", str(images / "0.jpg"), str(tmp_path / "bad.jpg"), "--model", str(run_dir))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"alexnet-tf predict: error: {tmp_path / 'bad.jpg'}: "
                                               "not an image: expected JPEG, PNG, GIF or BMP bytes"]
    nowhere = run_cli("predict", str(images / "0.jpg"), "--model", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and len(nowhere.stderr.strip().splitlines()) == 1
    assert "no such directory; expected a run directory" in nowhere.stderr
