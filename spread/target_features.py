"""Each target's own causal features on every panel row: from its legs and from its released labels.

The panel (`spread.features`) is one row per date, shared by every target; here target j gets its own K values
per row, computed from target j's legs (the one or two raw prices of its pair in target_pairs.csv) and from its
own released labels only:

- the spread's log returns ln S(t) - ln S(t - h) over `OWN_HORIZONS`, S = leg_a / leg_b (leg_a for a single-asset
  target), on raw prices forward-filled like the panel's (`FeatureConfig.ffill_limit` rows at most, never back);
- the `OWN_VOL_WINDOW`-row std of the daily log returns of the spread and of each leg;
- its latest released label (`spread.features.revealed_label_features`, the one release rule: the lag-k label of
  date d lands on the row d + k + 1) and the rolling mean and std of that series over `OWN_LABEL_WINDOWS` rows.

Everything on row t reads raw rows t - `own_lookback` .. t and labels released by t, so a build on the last
L + own_lookback raw rows gives the last row's values of a build on the whole history (the predictor relies on it).
The long-format LightGBM peer (`spread.lab.baselines.long_features`) and the Transformer's per-target head
(`data.own_features`) read these same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from spread.errors import DataError
from spread.features import (
    consecutive_date_ids, log_levels, raw_matrix, revealed_label_features, window_sums, write_differences,
)
from spread.targets import parse_pair

OWN_HORIZONS = (1, 2, 5, 10, 20)
"""Horizons (rows) of the spread's log returns."""
OWN_VOL_WINDOW = 20
"""Rows of the rolling volatilities of the spread and its legs."""
OWN_LABEL_WINDOWS = (5, 20)
"""Rows of the rolling mean and std of a target's released labels."""
OWN_FEATURES = (
    *(f"spread_ret{h}" for h in OWN_HORIZONS),
    *(f"{series}_vol{OWN_VOL_WINDOW}" for series in ("spread", "leg_a", "leg_b")),
    "label_last",
    *(f"label_{stat}{w}" for w in OWN_LABEL_WINDOWS for stat in ("mean", "std")),
)
"""The K own features, in the order of the last axis of `own_features`."""


def own_lookback(ffill_limit: int) -> int:
    """Raw rows before t that any own feature of row t may read (the label windows read the rows' released labels,
    within the same span)."""
    return max(*OWN_HORIZONS, OWN_VOL_WINDOW, *OWN_LABEL_WINDOWS) + ffill_limit


def target_legs(pairs: pl.DataFrame) -> list[tuple[str, ...]]:
    """The raw columns of each target's pair, in target order: (leg_a,) or (leg_a, leg_b)."""
    return [parse_pair(pair) for pair in pairs["pair"].to_list()]


def leg_columns(pairs: pl.DataFrame) -> list[str]:
    """Every raw column some target's pair reads, in first-seen order."""
    return list(dict.fromkeys(leg for legs in target_legs(pairs) for leg in legs))


def rolling_mean_std(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, mean and population std of the finite values of rows t - window + 1 .. t (NaN below 2 values;
    `spread.features.window_sums`, so each window is summed from its own rows)."""
    count, first, second = window_sums(values, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = first / count
        std = np.sqrt(np.maximum(second / count - mean**2, 0.0))
    mean[count < 2], std[count < 2] = np.nan, np.nan
    return mean, std


def own_features(raw: pl.DataFrame, labels: pl.DataFrame, pairs: pl.DataFrame, ffill_limit: int) -> np.ndarray:
    """(T, N, K) float32: on the row of each date of `raw` (date_id + raw columns, consecutive dates), target j's
    `OWN_FEATURES` (NaN where unknown: too little history, a leg missing beyond the fill limit, no label released).

    `labels`: date_id + at least the N targets of `pairs` (columns target, pair, lag), holding each label where it
    is known; the release rule places each one on its release date's row.
    """
    date_ids = consecutive_date_ids(raw, "own features")
    legs = target_legs(pairs)
    columns = leg_columns(pairs)
    absent = [c for c in columns if c not in raw.columns]
    if absent:
        raise DataError(f"own features: raw column(s) {absent[:10]} of target_pairs.csv are missing")
    targets = pairs["target"].to_list()
    absent = [t for t in targets if t not in labels.columns]
    if absent:
        raise DataError(f"own features: labels lack target column(s) {absent[:10]}")
    levels = log_levels(raw_matrix(raw, columns), ffill_limit)  # (T, legs)
    position = {name: i for i, name in enumerate(columns)}
    first = levels[:, [position[pair[0]] for pair in legs]]  # (T, N)
    second = np.stack([levels[:, position[pair[1]]] if len(pair) == 2 else np.zeros(len(levels)) for pair in legs],
                      axis=1)  # (T, N)
    spread = first - second  # (T, N)
    blocks = []
    for horizon in OWN_HORIZONS:
        returns = np.full_like(spread, np.nan)
        write_differences(spread, horizon, returns)
        blocks.append(returns)
    for series in (spread, first, second):
        daily = np.full_like(series, np.nan)
        write_differences(series, 1, daily)
        blocks.append(rolling_mean_std(daily, OWN_VOL_WINDOW)[1])
    lags = pairs["lag"].to_numpy().astype(np.int64)
    revealed = revealed_label_features(labels[["date_id", *targets]], date_ids, lags).astype(np.float64)  # (T, N)
    blocks.append(revealed)
    for window in OWN_LABEL_WINDOWS:
        blocks += rolling_mean_std(revealed, window)
    return np.stack(blocks, axis=2).astype(np.float32)  # (T, N, K)


def own_scaler_names(targets: Sequence[str]) -> list[str]:
    """`target__feature` for every target and own feature: the columns of a (T, N * K) reshape of `own_features`."""
    return [f"{target}__{name}" for target in targets for name in OWN_FEATURES]
