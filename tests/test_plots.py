"""Pictures of a run folder: written from a real (tiny) training run, valid PNGs, and skipped, never raised, when
an input is missing or broken; the bench's score table."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread

from spread.cli import main
from spread.config import load_config
from spread.errors import DataError
from spread.plots import PLOTS_DIR, RUN_PLOTS, plot_bench_scores, write_run_plots
from spread.trainer import train

from conftest import TINY_RUN

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, small: Path, single_thread: None) -> Path:
    """A finished run folder from the trainer itself: one walk-forward fold and the holdout."""
    root = tmp_path_factory.mktemp("plots")
    train(load_config(None, [*TINY_RUN, "train.plots=true"]), small, root / "run")
    return root / "run"


def test_training_draws_the_pictures_after_the_manifest(run: Path) -> None:
    """The trainer draws every picture when it ends; they are not artefacts the manifest checks."""
    for name in RUN_PLOTS:
        assert_png(run / PLOTS_DIR / name)
    manifest = json.loads((run / "manifest.json").read_text())
    assert not [name for name in manifest["artifacts"] if name.startswith(PLOTS_DIR)]


def assert_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01, f"{path}: a blank image"
    return image


@pytest.mark.slow
def test_every_picture_of_a_run_is_a_valid_png(run: Path, tmp_path: Path, capsys) -> None:
    written = write_run_plots(run)
    assert written == [run / PLOTS_DIR / name for name in RUN_PLOTS]
    for path in written:
        assert_png(path)
    # two folds: the training curves get a row each, so that picture is taller than one fold's
    one_fold = tmp_path / "one"
    one_fold.mkdir()
    metrics = (run / "metrics.csv").read_text().splitlines()
    (one_fold / "metrics.csv").write_text("\n".join(line for line in metrics if not line.startswith("fold0")) + "\n")
    (single,) = write_run_plots(one_fold)
    assert imread(single).shape[0] < imread(run / PLOTS_DIR / "training.png").shape[0]
    # the command redraws them and prints each path
    assert main(["plots", str(run)]) == 0
    assert capsys.readouterr().out.split() == [str(path) for path in written]


def test_missing_or_broken_inputs_skip_their_picture(run: Path, tmp_path: Path, caplog) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("metrics.csv", "gate_weights.csv"):
        shutil.copy(run / name, partial / name)
    (partial / "folds.csv").write_text("fold,start\nfold0,1\n")  # no train/val columns
    with caplog.at_level(logging.INFO, logger="spread.plots"):
        written = write_run_plots(partial)
    assert [path.name for path in written] == ["training.png", "gates.png"]
    assert "summary.json not found" in caplog.text
    assert "folds.csv: missing column(s)" in caplog.text
    assert write_run_plots(tmp_path / "empty") == []
    diverged = tmp_path / "diverged"  # a fit whose every validation score is NaN has no best epoch to mark
    diverged.mkdir()
    metrics = pl.read_csv(run / "metrics.csv").with_columns(pl.lit(float("nan")).alias("val_score"))
    metrics.write_csv(diverged / "metrics.csv")
    assert [path.name for path in write_run_plots(diverged)] == ["training.png"]


def test_bench_scores_are_drawn_with_error_bars(tmp_path: Path) -> None:
    rows = [{"source": "synthetic", "model": "ridge", "mean": 1.1, "std": 0.1},
            {"source": "synthetic", "model": "transformer", "mean": 1.3, "std": 0.2},
            {"source": "real", "model": "last_label", "mean": 0.05, "std": float("nan")}]
    assert_png(plot_bench_scores(rows, tmp_path / "bench.png"))
    with pytest.raises(DataError, match="std"):
        plot_bench_scores([{"model": "ridge", "mean": 1.0}], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
