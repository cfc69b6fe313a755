"""Each target's own features: the spread of its own legs, its released labels only, bounded lookback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spread.competition import load_competition
from spread.errors import DataError
from spread.target_features import OWN_FEATURES, own_features, own_lookback, rolling_mean_std
from spread.targets import release_date


@pytest.fixture(scope="module")
def comp(small: Path):
    return load_competition(small)


def test_rolling_mean_std_matches_a_direct_computation() -> None:
    values = np.random.default_rng(0).normal(size=(30, 3))
    values[[2, 7, 8, 9], 1] = np.nan
    mean, std = rolling_mean_std(values, 5)
    for t in range(30):
        for j in range(3):
            window = values[max(0, t - 4) : t + 1, j]
            window = window[np.isfinite(window)]
            if len(window) < 2:
                assert np.isnan(mean[t, j]) and np.isnan(std[t, j])
            else:
                assert mean[t, j] == pytest.approx(window.mean()) and std[t, j] == pytest.approx(window.std(), abs=1e-9)


def test_rolling_windows_are_summed_from_their_own_rows() -> None:
    """A huge value long before leaves no rounding residue: the last rows of a build on a tail equal a full build's."""
    values = np.random.default_rng(1).normal(size=(400, 4)) * 1e-3
    values[3] = 1e6
    full, tail = rolling_mean_std(values, 5), rolling_mean_std(values[-30:], 5)
    for whole, part in zip(full, tail):
        np.testing.assert_array_equal(part[-20:], whole[-20:])


def test_own_features_come_from_the_targets_legs_and_its_released_labels(comp) -> None:
    values = own_features(comp.train, comp.labels, comp.pairs, ffill_limit=5)
    assert values.shape == (comp.train.height, len(comp.target_names), len(OWN_FEATURES)) and values.dtype == np.float32
    j = next(k for k, pair in enumerate(comp.pairs["pair"]) if " - " in pair)
    first, second = (comp.train[c].to_numpy() for c in comp.pairs["pair"][j].split(" - "))
    spread = np.log(first) - np.log(second)
    row = 200
    assert values[row, j, OWN_FEATURES.index("spread_ret10")] == pytest.approx(spread[row] - spread[row - 10], rel=1e-5)
    label = comp.labels[comp.target_names[j]].to_numpy()
    lag = comp.target_lags[j]
    assert values[row, j, OWN_FEATURES.index("label_last")] == pytest.approx(label[row - lag - 1], rel=1e-5)
    revealed = label[row - lag - 5 : row - lag]  # the labels landing on rows row - 4 .. row
    assert values[row, j, OWN_FEATURES.index("label_mean5")] == pytest.approx(np.nanmean(revealed), rel=1e-5)


def test_unreleased_labels_never_reach_own_features(comp) -> None:
    """Perturbing every label not yet released by date t leaves every own feature of rows up to t unchanged."""
    t = 150
    values = own_features(comp.train, comp.labels, comp.pairs, ffill_limit=5)
    label_dates = comp.labels["date_id"].to_numpy()
    perturbed = comp.labels.clone()
    for name, lag in zip(comp.target_names, comp.target_lags):
        column = perturbed[name].to_numpy().copy()
        unreleased = release_date(label_dates, int(lag)) > t
        column[unreleased] = 1e3
        perturbed = perturbed.with_columns(perturbed[name].__class__(name, column))
    changed = own_features(comp.train, perturbed, comp.pairs, ffill_limit=5)
    np.testing.assert_array_equal(changed[: t + 1], values[: t + 1])
    assert not np.array_equal(changed[t + 1 :], values[t + 1 :], equal_nan=True)  # the perturbation is visible later


def test_a_tail_of_lookback_rows_gives_the_last_rows_values(comp) -> None:
    values = own_features(comp.train, comp.labels, comp.pairs, ffill_limit=5)
    rows = own_lookback(5) + 1
    tail = own_features(comp.train.tail(rows), comp.labels, comp.pairs, ffill_limit=5)
    np.testing.assert_allclose(tail[-1], values[-1], rtol=1e-5, atol=1e-7)
    short = own_features(comp.train.tail(rows - 6), comp.labels, comp.pairs, ffill_limit=5)
    assert np.isnan(short[-1, :, OWN_FEATURES.index("spread_ret20")]).any()  # too short a tail is visible


def test_missing_legs_or_labels_are_named(comp) -> None:
    leg = comp.pairs["pair"][0].split(" - ")[0]
    with pytest.raises(DataError, match=leg):
        own_features(comp.train.drop(leg), comp.labels, comp.pairs, ffill_limit=5)
    with pytest.raises(DataError, match=comp.target_names[0]):
        own_features(comp.train, comp.labels.drop(comp.target_names[0]), comp.pairs, ffill_limit=5)
