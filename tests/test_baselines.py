"""Baselines: same folds and metric as the trainer, no leakage, finite predictions, a trainer-like run folder."""

from __future__ import annotations

import json
import sys
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.lab.baselines import (
    BASELINES,
    _reduced_rank_fits,
    _ridge_solutions,
    fold_context,
    long_features,
    predict_last_label,
    predict_lightgbm,
    predict_mean_rank,
    predict_reduced_rank,
    predict_regularised_prior,
    predict_ridge,
    run_baseline,
    weighted_prior,
)
from spread.trainer import competition_folds
from spread.competition import load_competition
from spread.config import Config, load_config
from spread.errors import ConfigError, DataError
from spread.prior import daily_ranks, mean_rank_prior
from spread.windows import competition_panel, label_matrix

SMALL_SPLIT = ["split.val_size=30", "split.step=30", "split.min_train=50"]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(None, SMALL_SPLIT)


def _contexts(data_dir: Path, cfg: Config, labels_override: np.ndarray | None = None) -> list:
    comp = load_competition(data_dir)
    panel = competition_panel(comp, cfg.features)
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names).astype(np.float64)
    if labels_override is not None:
        labels = labels_override
    return [fold_context(comp, cfg, fold, panel, labels) for fold in competition_folds(comp, cfg)]


def test_daily_ranks_scale_each_row_to_unit_interval() -> None:
    values = np.array([[0.3, np.nan, -1.0, 0.3], [np.nan, 2.0, np.nan, np.nan]])
    ranks = daily_ranks(values)
    np.testing.assert_allclose(ranks[0], [0.75, np.nan, 0.0, 0.75])
    np.testing.assert_allclose(ranks[1], [np.nan, 0.5, np.nan, np.nan])


def test_ridge_solution_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    weights = rng.normal(size=(5, 3))
    y = x @ weights + 0.7
    ((fitted, intercept),) = _ridge_solutions(x, y, (1e-9,))
    np.testing.assert_allclose(fitted, weights, atol=1e-6)
    np.testing.assert_allclose(intercept, 0.7, atol=1e-6)
    ((shrunk, _),) = _ridge_solutions(x, y, (100.0,))
    assert np.abs(shrunk).sum() < 0.1 * np.abs(weights).sum()


def test_fold_context_masks_training_labels_not_released_by_the_cutoff(small: Path, cfg: Config) -> None:
    for ctx in _contexts(small, cfg):
        dates = ctx.panel.date_ids[ctx.train_rows]
        release = dates[:, None] + ctx.comp.target_lags[None, :] + 1
        known = np.isfinite(ctx.known[ctx.train_rows])
        assert known.any() and (release[known] <= ctx.fold.train_cutoff).all()
        assert ctx.panel.date_ids[ctx.val_rows].min() > ctx.fold.train_cutoff


def test_mean_rank_is_the_prior_of_the_training_labels(small: Path, cfg: Config) -> None:
    ctx = _contexts(small, cfg)[0]
    pred = predict_mean_rank(ctx)
    assert pred.shape == (len(ctx.val_rows), len(ctx.comp.target_names))
    np.testing.assert_allclose(pred[0], mean_rank_prior(ctx.known[ctx.train_rows]))
    np.testing.assert_allclose(pred[-1], pred[0])


def test_last_label_is_the_rank_of_the_label_released_on_the_date(small: Path, cfg: Config) -> None:
    ctx = _contexts(small, cfg)[0]
    pred = predict_last_label(ctx)
    assert np.isfinite(pred).all()
    comp, day = ctx.comp, ctx.panel.date_ids[ctx.val_rows[3]]
    released = np.array(
        [
            comp.labels.filter(pl.col("date_id") == day - lag - 1)[name][0]
            for name, lag in zip(comp.target_names, comp.target_lags)
        ],
        dtype=np.float64,
    )
    np.testing.assert_allclose(pred[3], daily_ranks(released[None, :])[0])


def test_predictions_ignore_labels_the_fold_may_not_see(small: Path, cfg: Config) -> None:
    """Scrambling every label from a fold's first validation date on changes no mean-rank or ridge prediction."""
    clean = _contexts(small, cfg)[0]
    scrambled_labels = clean.known.copy()
    first_val = clean.val_rows[0]
    rng = np.random.default_rng(1)
    scrambled_labels[first_val:] = rng.permutation(scrambled_labels[first_val:].ravel()).reshape(
        scrambled_labels[first_val:].shape
    )
    scrambled = _contexts(small, cfg, labels_override=scrambled_labels)[0]
    for predict in (predict_mean_rank, predict_ridge, predict_reduced_rank, predict_regularised_prior):
        np.testing.assert_allclose(predict(scrambled), predict(clean))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_run_baseline_writes_a_trainer_like_run_folder(small: Path, cfg: Config, tmp_path: Path, name: str) -> None:
    summary = run_baseline(name, cfg, small, tmp_path / name)
    run = tmp_path / name
    for file_name in ("config.yaml", "folds.csv", "metrics.csv", "summary.json"):
        assert (run / file_name).is_file()
    assert load_config(run / "config.yaml") == cfg
    folds = pl.read_csv(run / "folds.csv")
    assert folds["fold"].to_list() == ["fold0", "fold1", "fold2", "holdout"]
    metrics = pl.read_csv(run / "metrics.csv")
    assert metrics["fold"].to_list() == folds["fold"].to_list()
    logged = [summary["folds"][fold]["metrics"]["score"] for fold in folds["fold"]]
    np.testing.assert_allclose(metrics["val_score"].to_numpy(), logged)
    scores = [summary["folds"][fold]["metrics"]["score"] for fold in folds["fold"]]
    assert all(np.isfinite(scores))
    assert summary["mean"]["score"] == pytest.approx(np.mean(scores))
    assert summary["std"]["score"] == pytest.approx(np.std(scores))
    saved = json.loads((run / "summary.json").read_text())
    assert saved["baseline"] == name
    assert 0 < saved["mean"]["oracle_score"] and saved["oracle_fraction"] == pytest.approx(
        summary["mean"]["score"] / saved["mean"]["oracle_score"]
    )


def test_oracle_beats_the_mean_rank_on_synthetic_data(small: Path, cfg: Config, tmp_path: Path) -> None:
    oracle = run_baseline("oracle", cfg, small, tmp_path / "oracle")
    prior = run_baseline("mean_rank", cfg, small, tmp_path / "prior")["mean"]["score"]
    assert oracle["mean"]["score"] > prior + 0.3
    assert oracle["oracle_fraction"] == pytest.approx(1.0)


def test_bad_requests_are_clear_errors(small: Path, cfg: Config, tmp_path: Path, tiny_competition: Path) -> None:
    with pytest.raises(ConfigError, match="unknown name 'lasso'"):
        run_baseline("lasso", cfg, small, tmp_path / "a")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        run_baseline("mean_rank", cfg, small, tmp_path / "busy")
    tiny_cfg = load_config(None, ["split.val_size=3", "split.step=3", "split.min_train=5", "split.n_folds=1"])
    with pytest.raises(DataError, match="oracle_predictions.csv"):
        run_baseline("oracle", tiny_cfg, tiny_competition, tmp_path / "b")
    broken = tmp_path / "broken"  # a malformed oracle file: one line naming it, and no run folder written
    shutil.copytree(small, broken)
    lines = (broken / "oracle_predictions.csv").read_text().splitlines()
    lines[3] = ",".join([lines[3].split(",")[0], "abc", *lines[3].split(",")[2:]])
    (broken / "oracle_predictions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="oracle_predictions.csv: not a readable oracle file"):
        run_baseline("mean_rank", cfg, broken, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_reduced_rank_recovers_a_low_rank_map_and_full_rank_is_ridge() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    weights = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 6))  # rank 2
    y = x @ weights + 0.3 + 0.05 * rng.normal(size=(400, 6))
    fits = _reduced_rank_fits(x, y, (1e-6,), [1, 2, 6])
    ((ridge, ridge_intercept),) = _ridge_solutions(x, y, (1e-6,))
    np.testing.assert_allclose(fits[(1e-6, 6)][0], ridge, atol=1e-8)
    np.testing.assert_allclose(fits[(1e-6, 6)][1], ridge_intercept, atol=1e-8)
    two, _ = fits[(1e-6, 2)]
    assert np.linalg.matrix_rank(two, tol=1e-8) == 2 and np.abs(two - weights).max() < 0.02
    one, _ = fits[(1e-6, 1)]
    assert np.linalg.matrix_rank(one, tol=1e-8) == 1 and np.abs(one - weights).max() > 0.1


def test_weighted_prior_is_the_mean_rank_then_weighs_recent_dates_and_shrinks_rare_targets() -> None:
    labels = np.random.default_rng(0).normal(size=(50, 5))
    labels[:45, 4] = np.nan  # target 4 seen on 5 dates only
    ranks, ages = daily_ranks(labels), np.arange(49, -1, -1.0)
    np.testing.assert_allclose(weighted_prior(ranks, ages, None, 0.0), mean_rank_prior(labels))
    recent = weighted_prior(ranks, ages, 1.0, 0.0)
    assert np.abs(recent - np.nanmean(ranks[-3:], axis=0)).max() < np.abs(recent - np.nanmean(ranks, axis=0)).max()
    shrunk = weighted_prior(ranks, ages, None, 20.0)
    moved = np.abs(shrunk - 0.5) / np.abs(weighted_prior(ranks, ages, None, 0.0) - 0.5)
    assert moved[4] < 0.25 < 0.5 < moved[:4].min()


def test_long_features_of_a_target_come_from_its_own_legs_and_released_labels(small: Path, cfg: Config) -> None:
    ctx = _contexts(small, cfg)[-1]
    names, features = long_features(ctx)
    comp = ctx.comp
    assert features.shape == (len(ctx.panel.date_ids), len(comp.target_names), len(names)) and names[-1] == "target"
    j = next(k for k, pair in enumerate(comp.pairs["pair"]) if " - " in pair)
    first, second = (comp.train[c].to_numpy() for c in comp.pairs["pair"][j].split(" - "))
    spread = np.log(first) - np.log(second)
    row = ctx.val_rows[5]
    assert features[row, j, names.index("spread_ret5")] == pytest.approx(spread[row] - spread[row - 5], rel=1e-5)
    lag = comp.target_lags[j]
    label = comp.labels[comp.target_names[j]].to_numpy()
    assert features[row, j, names.index("label_last")] == pytest.approx(label[row - lag - 1], rel=1e-5)
    np.testing.assert_allclose(features[row, :, names.index("mean_rank")], ctx.prior, rtol=1e-6)
    np.testing.assert_array_equal(features[row, :, names.index("lag")], comp.target_lags)


def test_lightgbm_is_deterministic_and_missing_lightgbm_is_a_clear_error(
    small: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _contexts(small, cfg)[0]
    first = predict_lightgbm(ctx)
    assert first.shape == (len(ctx.val_rows), len(ctx.comp.target_names)) and np.isfinite(first).all()
    np.testing.assert_array_equal(predict_lightgbm(ctx), first)
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ConfigError, match="pip install -r requirements-bench.txt"):
        predict_lightgbm(ctx)
