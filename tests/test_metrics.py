"""Tests of spread.metrics: the competition score against scipy and a row-by-row port of the official scorer,
hand-computed cases (ties, NaN truths, one-target days, constant and NaN predictions), the validation metrics
and the table helpers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata, spearmanr

from spread.errors import DataError, SpreadError
from spread.metrics import (
    MetricError,
    average_ranks,
    daily_rank_correlations,
    gate_sparsity,
    ic_by_group,
    quintile_spread,
    rank_correlation_sharpe,
    read_table,
    score_frames,
    top_k_precision,
    validation_metrics,
)


def official_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Row-by-row port of the organisers' `rank_correlation_sharpe_ratio` (pandas replaced by numpy/scipy)."""
    daily = []
    for truth_row, pred_row in zip(truth, pred):
        scored = ~np.isnan(truth_row)
        if not scored.any():
            raise ValueError("No non-null target values found")
        truths, preds = truth_row[scored], pred_row[scored]
        present = preds[~np.isnan(preds)]
        if truths.std() == 0 or (present.size and present.std() == 0):
            raise ValueError("Denominator is zero, unable to compute rank correlation.")
        if np.isnan(preds).any():
            daily.append(np.nan)
            continue
        daily.append(np.corrcoef(rankdata(preds), rankdata(truths))[0, 1])
    rho = np.array(daily)
    rho = rho[~np.isnan(rho)]
    if rho.std() == 0:
        raise ValueError("Denominator is zero, unable to compute Sharpe ratio.")
    return float(rho.mean() / rho.std())


def random_panel(days: int = 40, targets: int = 30, nan_share: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(days, targets))
    truth[rng.random(truth.shape) < nan_share] = np.nan
    pred = 0.3 * np.nan_to_num(truth) + rng.normal(size=truth.shape)
    return truth, pred


# ---------------------------------------------------------------------------------------------------------------
# ranks and daily correlations


def test_average_ranks_match_scipy_with_ties_and_excluded_cells():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 5, size=(6, 12)).astype(float)
    values[0, :3] = np.inf
    valid = rng.random(values.shape) < 0.7
    ranks = average_ranks(values, valid)
    for row in range(values.shape[0]):
        np.testing.assert_array_equal(ranks[row, valid[row]], rankdata(values[row, valid[row]]))
        assert np.isnan(ranks[row, ~valid[row]]).all()


def test_daily_rank_correlations_match_spearmanr_with_ties_and_nan_truths():
    truth, pred = random_panel()
    truth, pred = np.round(truth * 2), np.round(pred * 2)  # many ties on both sides
    rho = daily_rank_correlations(truth, pred)
    for day in range(truth.shape[0]):
        scored = ~np.isnan(truth[day])
        assert rho[day] == pytest.approx(spearmanr(truth[day, scored], pred[day, scored])[0], abs=1e-12)


def test_hand_computed_ties():
    # truth ranks [1, 2.5, 2.5, 4], prediction ranks [1.5, 1.5, 3, 4]: cov 3.75, variances 4.5 -> 5/6
    rho = daily_rank_correlations(np.array([[1.0, 2.0, 2.0, 3.0]]), np.array([[1.0, 1.0, 2.0, 3.0]]))
    assert rho[0] == pytest.approx(5 / 6, abs=1e-15)


def test_nan_truths_are_excluded_with_their_predictions():
    truth = np.array([[np.nan, 1.0, 2.0, 3.0], [1.0, 2.0, np.nan, 4.0]])
    pred = np.array([[100.0, 3.0, 2.0, 1.0], [1.0, 2.0, np.nan, 3.0]])  # NaN prediction where the truth is NaN
    np.testing.assert_allclose(daily_rank_correlations(truth, pred), [-1.0, 1.0])


def test_nan_prediction_drops_the_day_like_the_official_scorer():
    truth, pred = random_panel(seed=2)
    pred[[3, 7], 0] = np.nan
    truth[[3, 7], 0] = 1.0
    rho = daily_rank_correlations(truth, pred)
    assert np.flatnonzero(np.isnan(rho)).tolist() == [3, 7]
    kept = np.setdiff1d(np.arange(truth.shape[0]), [3, 7])
    assert rank_correlation_sharpe(truth, pred) == pytest.approx(rank_correlation_sharpe(truth[kept], pred[kept]))
    assert rank_correlation_sharpe(truth, pred) == pytest.approx(official_score(truth, pred), abs=1e-12)


def test_score_matches_official_port():
    for seed in range(3):
        truth, pred = random_panel(days=25, targets=17, seed=seed)
        assert rank_correlation_sharpe(truth, pred) == pytest.approx(official_score(truth, pred), abs=1e-12)


def test_hand_computed_score():
    truth = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    pred = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])  # rho 1, -1, 0.5
    rho = np.array([1.0, -1.0, 0.5])
    np.testing.assert_allclose(daily_rank_correlations(truth, pred), rho)
    assert rank_correlation_sharpe(truth, pred) == pytest.approx(rho.mean() / rho.std())


@pytest.mark.parametrize(
    ("truth_row", "pred_row", "message"),
    [
        ([np.nan, np.nan, np.nan], [1.0, 2.0, 3.0], "no non-null target"),
        ([np.nan, 0.5, np.nan], [1.0, 2.0, 3.0], "constant"),  # one-target day: std 0
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "constant"),
        ([1.0, 2.0, np.nan], [4.0, 4.0, 9.0], "constant"),  # constant over S_d only
        ([1.0, 2.0, 3.0], [np.nan, 5.0, 5.0], "constant"),  # non-NaN predictions constant, as pandas std
    ],
)
def test_unscorable_day_raises_naming_its_date_id(truth_row, pred_row, message):
    truth = np.array([[1.0, 2.0, 3.0], truth_row, [3.0, 1.0, 2.0]])
    pred = np.array([[1.0, 2.0, 3.0], pred_row, [1.0, 2.0, 3.0]])
    with pytest.raises(MetricError, match=f"date_id 1828: .*{message}"):
        daily_rank_correlations(truth, pred, np.array([1827, 1828, 1829]))
    with pytest.raises(MetricError, match="date_id 1828"):
        rank_correlation_sharpe(truth, pred, np.array([1827, 1828, 1829]))


def test_zero_std_of_rho_raises():
    truth = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    with pytest.raises(MetricError, match="std of the daily rank correlations is 0"):
        rank_correlation_sharpe(truth, truth.copy())
    assert issubclass(MetricError, SpreadError)


def test_all_days_dropped_gives_nan_and_a_warning(caplog):
    truth = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    pred = np.array([[np.nan, np.nan, np.nan], [np.nan, 2.0, 3.0]])
    with caplog.at_level(logging.WARNING, logger="spread.metrics"):
        assert np.isnan(rank_correlation_sharpe(truth, pred, np.array([5, 6])))
    assert "2 of 2 day(s) dropped" in caplog.text and "[5, 6]" in caplog.text


def test_shape_mismatch_raises():
    with pytest.raises(MetricError, match="same shape"):
        daily_rank_correlations(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(MetricError, match="date_ids"):
        daily_rank_correlations(np.ones((2, 3)), np.ones((2, 3)), np.arange(3))


# ---------------------------------------------------------------------------------------------------------------
# validation metrics


def test_ic_by_group_is_the_score_of_each_group_and_lenient():
    truth, pred = random_panel(days=20, targets=12, nan_share=0.0, seed=3)
    groups = np.repeat([1, 2, 3], 4)
    pred[5, groups == 2] = 7.0  # constant predictions: day 5 skipped for group 2 only
    result = ic_by_group(truth, pred, groups)
    assert sorted(result) == [1, 2, 3]
    for group in (1, 3):
        rho = daily_rank_correlations(truth[:, groups == group], pred[:, groups == group])
        assert result[group] == pytest.approx((rho.mean(), rho.mean() / rho.std()))
    kept = np.setdiff1d(np.arange(20), [5])
    rho = daily_rank_correlations(truth[kept][:, groups == 2], pred[kept][:, groups == 2])
    assert result[2] == pytest.approx((rho.mean(), rho.mean() / rho.std()))


def test_top_k_precision_hand_cases():
    truth = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan]])
    assert top_k_precision(truth, truth.copy(), k=2) == 1.0
    assert top_k_precision(truth, -truth, k=2) == 0.0
    # predicted top-2 {5, 1}: one true top-2 hit; predicted bottom-2 {0, 2}: one true bottom-2 hit -> 2 / 4
    pred = np.array([[0.0, 5.0, 1.0, 2.0, 3.0, 6.0, 99.0]])
    assert top_k_precision(truth, pred, k=2) == 0.5
    assert top_k_precision(truth, pred, k=100) == top_k_precision(truth, pred, k=3)  # capped at half the day
    with pytest.raises(MetricError, match="k >= 1"):
        top_k_precision(truth, pred, k=0)


def test_top_k_precision_default_k_and_random_level():
    truth, pred = random_panel(days=50, targets=100, nan_share=0.0, seed=4)
    assert top_k_precision(truth, truth, k=None) == 1.0
    rng = np.random.default_rng(5)
    assert 0.0 < top_k_precision(truth, rng.normal(size=truth.shape)) < 0.3  # random level is k / n = 0.1


def test_quintile_spread_hand_case():
    truth = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, np.nan], [1.0, 2.0, 3.0, 4.0] + [np.nan] * 7])
    pred = np.arange(11.0)[None, :].repeat(2, axis=0)  # second day has 4 targets < 5: skipped
    # quintiles of 2: top predicted {8, 9} mean 8.5, bottom {0, 1} mean 0.5
    assert quintile_spread(truth, pred) == pytest.approx(8.0)
    assert quintile_spread(truth, -pred) == pytest.approx(-8.0)
    assert np.isnan(quintile_spread(truth[1:], pred[1:]))


def test_gate_sparsity():
    stats = gate_sparsity(np.array([0.0, 0.02, 0.07, 0.3, 0.9]))
    assert stats == pytest.approx({
        "gate_below_0.01": 0.2, "gate_below_0.05": 0.4, "gate_below_0.1": 0.6, "gate_below_0.5": 0.8,
        "gate_l1": 1.29, "gate_mean": 0.258,
    })
    with pytest.raises(MetricError):
        gate_sparsity(np.array([]))


def test_validation_metrics_keys_and_leniency():
    truth, pred = random_panel(days=12, targets=16, nan_share=0.2, seed=6)
    lags = np.repeat([1, 2, 3, 4], 4)
    metrics = validation_metrics(truth, pred, lags, gate=np.linspace(0, 1, 9))
    assert metrics["score"] == pytest.approx(rank_correlation_sharpe(truth, pred))
    assert metrics["icir"] == pytest.approx(metrics["score"])
    for lag in (1, 2, 3, 4):
        assert metrics[f"ic_lag{lag}"] == pytest.approx(ic_by_group(truth, pred, lags)[lag][0])
    assert {"topk_precision", "q1_q5_spread", "gate_l1", "gate_below_0.5", "nan_pred_days"} <= set(metrics)
    assert all(isinstance(value, float) for value in metrics.values())

    truth[0] = np.nan  # the official scorer would raise; logging must not
    pred[1, 0] = np.nan
    truth[1, 0] = 0.0
    metrics = validation_metrics(truth, pred, lags)
    assert np.isnan(metrics["score"]) and np.isfinite(metrics["icir"])
    assert metrics["nan_pred_days"] == 1.0
    assert "gate_l1" not in metrics


# ---------------------------------------------------------------------------------------------------------------
# tables


def frames(days: int = 8, targets: int = 5, seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
    truth, pred = random_panel(days=days, targets=targets, nan_share=0.2, seed=seed)
    names = [f"target_{i}" for i in range(targets)]
    dates = np.arange(100, 100 + days)
    solution = pl.DataFrame({"date_id": dates, **{n: truth[:, i] for i, n in enumerate(names)}})
    submission = pl.DataFrame({"date_id": dates, **{n: pred[:, i] for i, n in enumerate(names)}})
    return solution, submission, truth, pred


def test_score_frames_aligns_by_date_and_name():
    solution, submission, truth, pred = frames()
    expected = rank_correlation_sharpe(truth, pred)
    shuffled = submission.select(["target_3", "date_id", "target_0", "target_4", "target_2", "target_1"])
    shuffled = shuffled.reverse().with_columns(pl.lit(1.0).alias("extra"))
    extra_day = shuffled.head(1).with_columns(pl.lit(999).cast(shuffled["date_id"].dtype).alias("date_id"))
    assert score_frames(solution, pl.concat([shuffled, extra_day])) == pytest.approx(expected)
    assert score_frames(solution, submission, scored_dates=[101, 102, 104, 105, 5000]) == pytest.approx(
        rank_correlation_sharpe(truth[[1, 2, 4, 5]], pred[[1, 2, 4, 5]])
    )


def test_score_frames_errors_name_the_problem():
    solution, submission, _, _ = frames()
    with pytest.raises(MetricError, match=r"missing 2 target column\(s\): \['target_1', 'target_4'\]"):
        score_frames(solution, submission.drop("target_1", "target_4"))
    with pytest.raises(MetricError, match="no date_id in common"):
        score_frames(solution, submission.with_columns(pl.col("date_id") + 1000))
    with pytest.raises(MetricError, match="duplicate date_id 100"):
        score_frames(solution, pl.concat([submission, submission.head(1)]))
    with pytest.raises(MetricError, match="submission: missing column 'date_id'"):
        score_frames(solution, submission.drop("date_id"))
    with pytest.raises(MetricError, match="date_id 102"):  # constant predictions on that day
        score_frames(solution, submission.with_columns(
            pl.when(pl.col("date_id") == 102).then(0.0).otherwise(pl.col(f"target_{i}")).alias(f"target_{i}")
            for i in range(5)
        ))


def test_read_table_csv_and_parquet(tmp_path: Path):
    solution, submission, truth, pred = frames()
    solution.write_csv(tmp_path / "labels.csv")
    submission.write_parquet(tmp_path / "submission.parquet")
    labels = read_table(tmp_path / "labels.csv")
    assert labels.columns == solution.columns
    assert score_frames(labels, read_table(tmp_path / "submission.parquet")) == pytest.approx(
        rank_correlation_sharpe(truth, pred)
    )
    with pytest.raises(DataError, match="missing.csv: file not found"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "table.json").write_text("{}")
    with pytest.raises(DataError, match="table.json: unknown table format"):
        read_table(tmp_path / "table.json")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="broken.parquet: cannot be read"):
        read_table(tmp_path / "broken.parquet")
