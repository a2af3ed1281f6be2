"""The paper's pictures: PNGs that decode with the expected layout, exact nearest neighbours, colour scores."""

import numpy as np
import pytest
from PIL import Image

from alexnet_tf import figures
from tests.conftest import run_cli


def test_nearest_neighbours_equal_brute_force():
    rng = np.random.default_rng(0)
    queries, database = rng.normal(size=(7, 32)), rng.normal(size=(1000, 32))
    brute = np.argsort(((queries[:, None] - database[None]) ** 2).sum(-1), axis=1)[:, :6]
    np.testing.assert_array_equal(figures.nearest_neighbours(queries, database, k=6, chunk=97), brute)
    assert figures.nearest_neighbours(queries, database[:3], k=6).shape == (7, 3)


def test_colour_specificity_orders_grey_below_coloured():
    rng = np.random.default_rng(1)
    grey = np.repeat(rng.normal(size=(48, 11, 11, 1)), 3, axis=-1)
    coloured = rng.normal(size=(48, 11, 11, 3))  # independent channels: 2/3 of the energy is chroma
    mostly_grey = grey + 0.2 * coloured
    opponent = grey * np.array([1.0, -1.0, 0.0])  # red-green opponent kernels: all chroma
    assert figures.colour_specificity(grey) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < figures.colour_specificity(mostly_grey) < 0.1
    assert figures.colour_specificity(coloured) == pytest.approx(2 / 3, abs=0.02)
    assert figures.colour_specificity(opponent) == pytest.approx(1.0)


def test_kernel_grid_layout():
    grid = figures.kernel_grid(np.random.default_rng(2).normal(size=(48, 11, 11, 3)))
    assert grid.shape == (3 * 12 - 1, 16 * 12 - 1, 3) and grid.min() >= 0 and grid.max() <= 1


def test_figures_command_draws_every_png(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli("figures", str(run_dir), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "colour specificity: tower A" in result.stdout
    sizes = {}
    for name in ("figure3_conv1_kernels", "figure4_top5", "figure4_neighbours", "training_curves"):
        with Image.open(tmp_path / f"{name}.png") as image:
            image.load()
            sizes[name] = image.size
    assert sizes["figure3_conv1_kernels"] == (800, 360)
    assert sizes["figure4_top5"] == (1600, 460)
    assert sizes["figure4_neighbours"] == (910, 675)
    assert sizes["training_curves"] == (1200, 340)
    assert not list(tmp_path.glob(".*tmp*"))


def test_figures_without_history_still_draw_the_rest(smoke_run, tmp_path):
    import shutil

    run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs", "history.csv"))
    result = run_cli("figures", str(copy), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no training history" in result.stdout
    assert (tmp_path / "out" / "figure3_conv1_kernels.png").is_file()
    assert not (tmp_path / "out" / "training_curves.png").exists()


def test_embed_writes_features_labels_and_names(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli("embed", str(run_dir), "--split", "validation", "--out", str(tmp_path / "f.npz"))
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "f.npz") as data:
        assert data["features"].shape == (30, 4096) and data["labels"].shape == (30,)
        assert len(data["filenames"]) == 30 and len(data["classes"]) == 10


def test_history_with_epochs_without_validation(tmp_path):
    # CSVLogger writes "NA" for the validation columns of epochs that were not validated (train.validation_every).
    path = tmp_path / "history.csv"
    path.write_text("epoch,learning_rate,loss,top1_error,top5_error,val_loss,val_top1_error,val_top5_error\n"
                    "0,0.01,2.0,0.8,0.3,NA,NA,NA\n1,0.001,1.0,0.4,0.05,0.9,0.3,0.01\n")
    history = figures.read_history(path)
    assert np.isnan(history["val_loss"][0]) and history["val_top1_error"][1] == 0.3
    figures.training_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
