"""Tests that would catch a leak: future data, unreleased labels, purging, per-fold statistics, shuffled labels.

Each test perturbs what must not matter and asserts that nothing the model sees (or is fitted on) moves, and checks
that the perturbation does move something else, so the comparison is not vacuous.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spread.features
from spread.competition import Competition, load_competition
from spread.features import FeatureConfig, build_panel, released
from spread.scaling import ScalingConfig
from spread.screening import ScreenConfig
from spread.splits import Fold, SplitConfig, make_folds
from spread.synth import generate
from spread.targets import compute_targets
from spread.windows import DataConfig, FoldData, make_loader, prepare_fold

FEATURES = FeatureConfig()
CROSS_FEATURES = FeatureConfig(market_vol=[3, 10], market_vol_base=30, vol_interaction=10)
SIGN_FEATURES = FeatureConfig(market_vol=[3, 10], market_vol_base=30, vol_interaction=10, vol_interaction_form="sign")
DATA = DataConfig(window=16, time_scale=100.0)
SPLIT = SplitConfig(n_folds=2, val_size=40, step=40, min_train=60)
INPUTS = ("x", "t", "valid", "date_id")


def with_long_gaps(frame: pl.DataFrame, seed: int, runs_per_column: int = 6) -> pl.DataFrame:
    """Blank runs of 6-12 rows in every column: holes longer than the fill limit, where a fill from the future or
    from statistics over all rows would show."""
    rng = np.random.default_rng(seed)
    columns = []
    for name in frame.columns[1:]:
        values = frame[name].to_numpy().astype(np.float64)
        for start, length in zip(rng.integers(0, len(values), runs_per_column), rng.integers(6, 13, runs_per_column)):
            values[start : start + length] = np.nan
        columns.append(pl.Series(name, values, nan_to_null=True))
    return pl.DataFrame([frame["date_id"], *columns])


@pytest.fixture(scope="module")
def comp(tmp_path_factory) -> Competition:
    base = load_competition(generate(tmp_path_factory.mktemp("synth") / "c", seed=2, preset="small"))
    train = with_long_gaps(base.train, seed=0)
    # labels recomputed from the prices in memory, so perturbed prices can be compared with unperturbed ones
    return dataclasses.replace(base, train=train, labels=compute_targets(train, base.pairs))


@pytest.fixture(scope="module")
def folds(comp) -> list:
    return make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, SPLIT, comp.scored_dates)


def perturb(frame: pl.DataFrame, where: np.ndarray, seed: int, nan_share: float = 0.2) -> pl.DataFrame:
    """Multiply the cells selected by `where` ((rows,) or (rows, columns) bool) by random factors, blank a share."""
    rng = np.random.default_rng(seed)
    columns = [c for c in frame.columns if c != "date_id"]
    values = frame.select(columns).to_numpy().astype(np.float64)
    changed = values * np.exp(rng.normal(0, 0.3, values.shape)) + rng.normal(0, 1e-3, values.shape)
    changed[rng.random(values.shape) < nan_share] = np.nan
    selected = np.broadcast_to(where.reshape(len(values), -1), values.shape)
    values = np.where(selected, changed, values)
    series = [pl.Series(name, values[:, j], nan_to_null=True) for j, name in enumerate(columns)]
    return pl.DataFrame([frame["date_id"], *series])


def prepare(comp: Competition, fold, screen: ScreenConfig | None = None) -> FoldData:
    return prepare_fold(comp, fold, FEATURES, screen or ScreenConfig(), ScalingConfig(), DATA)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=True)


def dates_of(frame: pl.DataFrame) -> np.ndarray:
    return frame["date_id"].to_numpy()


# (1) -----------------------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, derandomize=True)
@given(offset=st.integers(0, 24), seed=st.integers(0, 10_000), what=st.sampled_from(["raw", "labels", "both"]))
def test_data_dated_after_t_leaves_every_input_at_t_unchanged(comp, folds, offset, seed, what):
    holdout = folds[-1]
    t = holdout.val_dates[0] + offset
    later = dates_of(comp.train) > t
    train = perturb(comp.train, later, seed) if what != "labels" else comp.train
    labels = perturb(comp.labels, later, seed + 1) if what != "raw" else comp.labels
    changed = dataclasses.replace(comp, train=train, labels=labels)
    before, after = prepare(comp, holdout), prepare(changed, holdout)
    assert same_array(before.scaler.center, after.scaler.center) and before.screen == after.screen
    for index in range(len(before.val)):
        sample, other = before.val[index], after.val[index]
        if int(sample["date_id"]) > t:
            continue
        for key in INPUTS:
            assert torch.equal(sample[key], other[key]), f"{key} at date {int(sample['date_id'])} moved"
    panel_before = build_panel(comp.train, comp.labels, comp.pairs, FEATURES)
    panel_after = build_panel(train, labels, comp.pairs, FEATURES)
    rows = panel_before.date_ids <= t
    assert same_array(panel_before.values[rows], panel_after.values[rows])
    assert not same_array(panel_before.values[~rows], panel_after.values[~rows])  # the change is visible later


@pytest.mark.parametrize("features", [FEATURES, CROSS_FEATURES, SIGN_FEATURES],
                         ids=["default", "market_vol_interactions", "market_vol_sign_interactions"])
@settings(max_examples=15, deadline=None, derandomize=True)
@given(t=st.integers(0, 318), seed=st.integers(0, 10_000))
def test_raw_rows_after_t_never_reach_panel_rows_up_to_t(comp, features, t, seed):
    """Every row of the panel, training rows included (no statistic over time, no backward fill); the market
    gauges and their interactions with the returns too (they read every price column)."""
    changed = perturb(comp.train, dates_of(comp.train) > t, seed)
    before = build_panel(comp.train, comp.labels, comp.pairs, features)
    after = build_panel(changed, comp.labels, comp.pairs, features)
    assert same_array(before.values[: t + 1], after.values[: t + 1])
    assert not same_array(before.values[t + 1 :], after.values[t + 1 :])


# (2) -----------------------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, derandomize=True)
@given(t=st.integers(0, 318), seed=st.integers(0, 10_000))
def test_revealed_label_features_use_only_labels_released_by_t(comp, t, seed):
    unreleased = ~released(dates_of(comp.labels), comp.target_lags, t)  # includes labels dated <= t
    changed = perturb(comp.labels, unreleased, seed)
    before = build_panel(comp.train, comp.labels, comp.pairs, FEATURES)
    after = build_panel(comp.train, changed, comp.pairs, FEATURES)
    assert same_array(before.values[: t + 1], after.values[: t + 1])
    assert not same_array(before.values[t + 1 :], after.values[t + 1 :])


def test_revealed_label_feature_is_the_label_of_t_minus_lag_minus_one(comp):
    panel = build_panel(comp.train, comp.labels, comp.pairs, FEATURES)
    labels = comp.labels.select(comp.target_names).to_numpy().astype(np.float32)
    columns = panel.column_indices([f"{name}__revealed" for name in comp.target_names])
    for j, lag in enumerate(comp.target_lags):
        np.testing.assert_array_equal(panel.values[lag + 1 :, columns[j]], labels[: -lag - 1, j])
        assert np.isnan(panel.values[: lag + 1, columns[j]]).all()


def test_training_labels_not_released_by_the_cutoff_are_masked(comp):
    """A fold whose training dates run up to its cutoff: only labels released by then may be targets."""
    cutoff = 250
    fold = Fold("manual", (0, cutoff - 2), (cutoff + 1, cutoff + 40), embargo=2, cutoff=cutoff)
    data = prepare(comp, fold)
    lags = comp.target_lags
    labels = comp.labels.select(comp.target_names).to_numpy()
    for index in range(len(data.train)):
        item = data.train[index]
        date = int(item["date_id"])
        allowed = released(np.array([date]), lags, cutoff)[0]
        np.testing.assert_array_equal(item["y_mask"].numpy(), allowed & np.isfinite(labels[date]))
    last = data.train[len(data.train) - 1]
    assert int(last["date_id"]) == cutoff - 2 and np.isfinite(labels[cutoff - 2, lags >= 2]).any()
    assert last["y_mask"][torch.from_numpy(lags == 1)].any() and not last["y_mask"][torch.from_numpy(lags >= 2)].any()


# (3) -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fold_index", [0, 1, 2])
def test_no_training_label_depends_on_a_price_in_the_validation_range(comp, folds, fold_index):
    fold = folds[fold_index]
    prices = perturb(comp.train, dates_of(comp.train) >= fold.val_dates[0], seed=fold_index, nan_share=0.0)
    changed = dataclasses.replace(comp, train=prices, labels=compute_targets(prices, comp.pairs))
    before, after = prepare(comp, fold), prepare(changed, fold)
    assert len(before.train) == len(after.train) > 0
    for index in range(len(before.train)):
        for key in ("y", "y_mask", "date_id"):
            assert torch.equal(before.train[index][key], after.train[index][key])
    assert not torch.equal(before.val[0]["y"], after.val[0]["y"])  # validation labels did move


# (4) -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["expanding", "sliding"])
def test_fold_statistics_ignore_data_outside_the_training_slice(comp, scheme):
    split = dataclasses.replace(SPLIT, scheme=scheme, train_size=120)
    fold = make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, split, comp.scored_dates)[0]
    first, last = fold.train_dates
    max_lag = int(comp.target_lags.max())
    raw_dates, label_dates = dates_of(comp.train), dates_of(comp.labels)
    outside_raw = (raw_dates < first - FEATURES.lookback()) | (raw_dates > last)
    outside_labels = (label_dates < first - max_lag - 1) | (label_dates > last)
    changed = dataclasses.replace(comp, train=perturb(comp.train, outside_raw, 5),
                                  labels=perturb(comp.labels, outside_labels, 6))
    screen = ScreenConfig(ic_max_features=60)  # exercise the IC ranking too
    before, after = prepare(comp, fold, screen), prepare(changed, fold, screen)
    assert before.screen == after.screen and before.feature_names == after.feature_names
    assert same_array(before.scaler.center, after.scaler.center)
    assert same_array(before.scaler.scale, after.scaler.scale)
    inside = dataclasses.replace(comp, train=perturb(comp.train, ~outside_raw, 7))
    assert not same_array(prepare(inside, fold, screen).scaler.center, before.scaler.center)


# (5) -----------------------------------------------------------------------------------------------------------
def last_row_features(dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features of each sample's own date, labels, label mask) of the whole dataset."""
    batch = next(iter(make_loader(dataset, len(dataset), shuffle=False, seed=0)))
    return batch["x"][:, -1].double().numpy(), batch["y"].numpy(), batch["y_mask"].numpy()


def validation_ic(comp: Competition, fold) -> float:
    """Mean over validation dates of the cross-sectional Spearman correlation of a ridge fit on last-row features."""
    data = prepare(comp, fold, ScreenConfig(min_abs_ic=0.0))
    x_train, y_train, _ = last_row_features(data.train)
    x_val, y_val, mask_val = last_row_features(data.val)
    gram = x_train.T @ x_train + 10.0 * np.eye(x_train.shape[1])
    predictions = x_val @ np.linalg.solve(gram, x_train.T @ y_train)
    correlations = []
    for prediction, truth, mask in zip(predictions, y_val, mask_val):
        ranks = [np.argsort(np.argsort(v[mask])) for v in (prediction, truth)]
        correlations.append(np.corrcoef(*ranks)[0, 1])
    return float(np.mean(correlations))


def test_shuffled_labels_give_validation_ic_near_zero(comp, monkeypatch):
    split = SplitConfig(n_folds=1, val_size=100, step=100, min_train=60, holdout=False)
    fold = make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, split)[0]
    order = np.random.default_rng(0).permutation(comp.labels.height)
    shuffled = comp.labels.select(comp.target_names)[order].insert_column(0, comp.labels["date_id"])
    comp = dataclasses.replace(comp, labels=shuffled)
    assert abs(validation_ic(comp, fold)) < 0.12
    # the same check catches a leak: a release rule that shows each label on its own date
    monkeypatch.setattr(spread.features, "release_date", lambda date_id, lag: date_id)
    assert validation_ic(comp, fold) > 0.5


# (6) -----------------------------------------------------------------------------------------------------------
PEER_CONFIG = ["split.n_folds=2", "split.val_size=40", "split.step=40", "split.min_train=60"]


def peer_predictions(comp: Competition, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(validation date_ids, predictions) of peer `name` on the holdout fold of `comp`."""
    from spread.lab.baselines import BASELINES, fold_context
    from spread.trainer import competition_folds
    from spread.config import load_config
    from spread.windows import competition_panel, label_matrix

    cfg = load_config(None, PEER_CONFIG)
    panel = competition_panel(comp, cfg.features)
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names).astype(np.float64)
    ctx = fold_context(comp, cfg, competition_folds(comp, cfg)[-1], panel, labels)
    return panel.date_ids[ctx.val_rows], BASELINES[name](ctx)


@pytest.mark.parametrize("name", ["lightgbm", "reduced_rank", "regularised_prior"])
def test_peer_predictions_at_t_ignore_future_prices_and_unreleased_labels(comp, name):
    """The release rule holds for the peers as for the Transformer: perturbing every price dated after t and every
    label not released by t leaves each prediction for a date <= t unchanged."""
    dates, before = peer_predictions(comp, name)
    t = int(dates[10])
    label_dates = dates_of(comp.labels)
    changed = dataclasses.replace(
        comp, train=perturb(comp.train, dates_of(comp.train) > t, seed=11),
        labels=perturb(comp.labels, ~released(label_dates, comp.target_lags, t), seed=12),
    )
    changed_dates, after = peer_predictions(changed, name)
    assert np.array_equal(dates, changed_dates)
    assert same_array(before[dates <= t], after[dates <= t])
    if name != "regularised_prior":  # a constant per fold: its inputs all lie before the cutoff
        assert not same_array(before[dates > t], after[dates > t])  # later dates do see the change
    else:
        training = dataclasses.replace(comp, labels=perturb(comp.labels, label_dates < t - 60, seed=13))
        assert not same_array(peer_predictions(training, name)[1], before)
