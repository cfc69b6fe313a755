"""Walk-forward folds, embargo and holdout: the release rule must separate training labels from validation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spread.errors import ConfigError, DataError
from spread.splits import Fold, SplitConfig, fold_table, format_fold_table, lag_mapping, make_folds
from spread.targets import release_date

REAL_DATES = np.arange(1961)
REAL_LAGS = np.repeat([1, 2, 3, 4], 106)
REAL_SCORED = list(range(1827, 1917))


def test_real_shaped_holdout_matches_the_competition():
    folds = make_folds(REAL_DATES, REAL_LAGS, SplitConfig(), scored_dates=REAL_SCORED)
    holdout = folds[-1]
    assert holdout == Fold("holdout", (0, 1821), (1827, 1916), embargo=5, cutoff=1826)
    assert [f.name for f in folds] == ["fold0", "fold1", "fold2", "holdout"]
    # walk-forward validation labels are all released before the holdout's first scored date
    assert release_date(folds[2].val_dates[1], 4) <= 1826
    assert [f.val_dates for f in folds[:3]] == [(1552, 1641), (1642, 1731), (1732, 1821)]


def check_fold_is_purged(fold: Fold, max_lag: int, min_embargo: int) -> None:
    train_first, train_last = fold.train_dates
    val_first, val_last = fold.val_dates
    assert train_first <= train_last < val_first <= val_last
    assert fold.embargo == val_first - train_last - 1 >= min_embargo >= max_lag + 1
    for lag in range(1, max_lag + 1):
        # the lag-k label of the last training date is released by the cutoff, before validation starts ...
        assert release_date(train_last, lag) <= fold.train_cutoff < val_first
        # ... so the last price it depends on (date + lag + 1) is dated before the validation range
        assert train_last + lag + 1 < val_first


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n_dates=st.integers(150, 800),
    max_lag=st.integers(1, 6),
    scheme=st.sampled_from(["expanding", "sliding"]),
    n_folds=st.integers(0, 4),
    val_size=st.integers(5, 60),
    step=st.integers(5, 60),
    embargo=st.integers(0, 7),
    holdout=st.booleans(),
    train_end_back=st.one_of(st.none(), st.integers(0, 100)),
    scored=st.booleans(),
)
def test_every_fold_is_purged_and_respects_train_end(
    n_dates, max_lag, scheme, n_folds, val_size, step, embargo, holdout, train_end_back, scored
):
    assume(n_folds > 0 or holdout)
    cfg = SplitConfig(scheme=scheme, n_folds=n_folds, val_size=val_size, step=step, embargo=embargo, min_train=20,
                      train_size=60, holdout=holdout)
    dates = np.arange(n_dates) + 7
    train_end = None if train_end_back is None else int(dates[-1]) - 40 - train_end_back
    scored_dates = list(range(int(dates[-1]) - 30, int(dates[-1]) - 10)) if scored else None
    lags = np.arange(1, max_lag + 1)
    try:
        folds = make_folds(dates, lags, cfg, scored_dates=scored_dates, train_end=train_end)
    except ConfigError as exc:
        assume("min_train" not in str(exc))  # too little history for this draw
        raise
    assert len(folds) == n_folds + int(holdout)
    for fold in folds:
        check_fold_is_purged(fold, max_lag, max_lag + 1 + embargo)
        assert fold.train_dates[0] >= dates[0] and fold.val_dates[1] <= dates[-1]
        if train_end is not None:
            assert fold.train_cutoff <= train_end
        if scheme == "sliding":
            assert fold.train_dates[1] - fold.train_dates[0] + 1 <= 60
    walk_forward = folds[:n_folds]
    for fold in walk_forward:
        assert fold.val_dates[1] - fold.val_dates[0] + 1 == val_size
    for earlier, later in zip(walk_forward, walk_forward[1:]):
        assert later.val_dates[0] - earlier.val_dates[0] == step
    if holdout:
        final = folds[-1]
        assert final.name == "holdout"
        if scored:
            assert final.val_dates == (scored_dates[0], scored_dates[-1])
        for fold in walk_forward:  # cross-validation only uses labels released by the holdout's cutoff
            assert release_date(fold.val_dates[1], max_lag) <= final.train_cutoff


def test_holdout_without_scored_dates_follows_train_end_or_ends_with_the_data():
    cfg = SplitConfig(n_folds=0, val_size=30, min_train=10)
    after_train_end = make_folds(np.arange(300), np.array([1, 4]), cfg, train_end=200)[0]
    assert after_train_end.val_dates == (201, 230) and after_train_end.train_cutoff == 200
    assert after_train_end.train_dates == (0, 195)
    at_the_end = make_folds(np.arange(300), np.array([1, 4]), cfg)[0]
    assert at_the_end.val_dates == (265, 294)  # the last 30 dates whose lag-4 labels are complete


def test_extra_embargo_widens_the_gap():
    folds = make_folds(REAL_DATES, REAL_LAGS, SplitConfig(embargo=10), scored_dates=REAL_SCORED)
    assert all(f.embargo == 15 for f in folds)
    assert folds[-1].train_dates[1] == 1827 - 16


def test_sliding_scheme_uses_a_fixed_training_length():
    folds = make_folds(REAL_DATES, REAL_LAGS, SplitConfig(scheme="sliding", train_size=500), scored_dates=REAL_SCORED)
    assert all(f.train_dates[1] - f.train_dates[0] + 1 == 500 for f in folds)


def test_too_little_history_and_bad_configs_raise():
    with pytest.raises(ConfigError, match="fold0.*min_train"):
        make_folds(np.arange(300), REAL_LAGS, SplitConfig(n_folds=3, val_size=90, step=90, min_train=50))
    with pytest.raises(DataError, match="consecutive"):
        make_folds(np.array([0, 1, 3]), REAL_LAGS, SplitConfig())
    with pytest.raises(DataError, match="holdout"):
        make_folds(np.arange(300), REAL_LAGS, SplitConfig(n_folds=0), scored_dates=[350, 351])
    for bad in ({"scheme": "random"}, {"val_size": 0}, {"n_folds": 0, "holdout": False}, {"embargo": -1}):
        with pytest.raises(ConfigError):
            SplitConfig(**bad)


def test_fold_table_lists_ranges_embargo_lags_and_feature_counts():
    pairs = pl.DataFrame({"target": ["t0", "t1", "t2"], "lag": [1, 4, 1], "pair": ["A", "B", "A - B"]})
    mapping = lag_mapping(pairs)
    assert mapping == {1: ["t0", "t2"], 4: ["t1"]}
    folds = make_folds(REAL_DATES, np.array([1, 4, 1]), SplitConfig(n_folds=1), scored_dates=REAL_SCORED)
    table = fold_table(folds, mapping, {"holdout": 321})
    assert table["fold"].to_list() == ["fold0", "holdout"]
    row = table.row(1, named=True)
    assert row["train_start"] == 0 and row["train_end"] == 1821 and row["n_train"] == 1822
    assert row["val_start"] == 1827 and row["val_end"] == 1916 and row["n_val"] == 90
    assert row["embargo"] == 5 and row["cutoff"] == 1826
    assert row["lag1_targets"] == 2 and row["lag4_targets"] == 1
    assert row["lag1_last_release"] == 1823 and row["lag4_last_release"] == 1826
    assert row["n_features"] == 321 and table["n_features"][0] is None


def test_fold_table_explains_the_embargo_and_prints_compactly():
    pairs = pl.DataFrame({"target": ["t0", "t1"], "lag": [1, 4], "pair": ["A", "B"]})
    cfg = SplitConfig(n_folds=2, embargo=3)
    folds = make_folds(REAL_DATES, np.array([1, 4]), cfg, scored_dates=REAL_SCORED, train_end=1700)
    table = fold_table(folds, lag_mapping(pairs))
    assert (table["embargo"] == table["embargo_release"] + table["embargo_extra"]).all()
    assert table["embargo_release"].to_list() == [5, 5, 5]  # max lag + 1, from the release rule
    assert table["embargo_extra"].to_list()[:2] == [3, 3]  # split.embargo
    assert table["embargo_extra"][2] == 1827 - 1 - 1700  # the holdout, cut at data.train_end
    text = format_fold_table(table)
    lines = text.splitlines()
    assert len(lines) == 1 + 3 + 1 and "features" not in lines[0] and "null" not in text
    assert max(map(len, lines)) < 110 and "1827..1916" in lines[3] and "131 = 5 + 126" in lines[3]
    with_features = format_fold_table(fold_table(folds, lag_mapping(pairs), {"fold0": 7, "fold1": 8, "holdout": 9}))
    assert "features" in with_features.splitlines()[0] and with_features.splitlines()[3].endswith(" 9")
