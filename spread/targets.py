"""Competition targets from prices: the exact formula of the MITSUI challenge.

With P_X(d) the price in column X on the row whose date_id is d (rows, not trading days, no fill):

    r_X(t, L) = ln(P_X(t + L + 1) / P_X(t + 1))
    target("A - B", L)(t) = r_A(t, L) - r_B(t, L);   target("A", L)(t) = r_A(t, L)

Any missing price gives NaN. The return starts at t + 1 (the day after the features are known), which is why a
lag-L label of date t only becomes known on date t + L + 1: `release_date` owns that rule for the whole package.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from spread.errors import DataError

PAIR_SEPARATOR = " - "


def parse_pair(pair: str, *, where: str = "target_pairs.csv") -> tuple[str, ...]:
    """Split a `pair` cell into its one or two column names ("A - B" or "A")."""
    parts = tuple(p.strip() for p in pair.split(PAIR_SEPARATOR))
    if not 1 <= len(parts) <= 2 or any(not p or p != p.strip() or " " in p for p in parts):
        raise DataError(f"{where}: malformed pair {pair!r}: expected 'A - B' or a single column name")
    return parts


def release_date(date_id: int | np.ndarray, lag: int | np.ndarray) -> int | np.ndarray:
    """The first date on which the lag-`lag` label of `date_id` is known: date_id + lag + 1."""
    return date_id + lag + 1


def compute_target_matrix(
    log_prices: np.ndarray, columns: list[str], pairs: list[str], lags: list[int]
) -> np.ndarray:
    """Targets as a (T, N) float64 array from a (T, A) array of log prices (rows = consecutive date_ids).

    `columns` names the A price columns; target j is `pairs[j]` at lag `lags[j]`.
    """
    n_dates = log_prices.shape[0]
    index = {name: i for i, name in enumerate(columns)}
    out = np.full((n_dates, len(pairs)), np.nan)
    for lag in sorted(set(lags)):
        # r[t] = logP[t + lag + 1] - logP[t + 1] for every asset at once; NaN past the end of the panel.
        returns = np.full_like(log_prices, np.nan)  # (T, A)
        if n_dates > lag + 1:
            returns[: n_dates - lag - 1] = log_prices[lag + 1 :] - log_prices[1 : n_dates - lag]
        for j, (pair, pair_lag) in enumerate(zip(pairs, lags)):
            if pair_lag != lag:
                continue
            legs = parse_pair(pair)
            out[:, j] = returns[:, index[legs[0]]]
            if len(legs) == 2:
                out[:, j] -= returns[:, index[legs[1]]]
    return out


def price_columns(pairs: pl.DataFrame) -> list[str]:
    """The distinct price columns named by the pairs, in first-appearance order."""
    seen: dict[str, None] = {}
    for pair in pairs["pair"].to_list():
        for leg in parse_pair(pair):
            seen.setdefault(leg, None)
    return list(seen)


def log_price_matrix(prices: pl.DataFrame, columns: list[str], *, where: str = "prices") -> np.ndarray:
    """(T, A) float64 log prices over consecutive date_ids; missing or non-positive prices become NaN."""
    missing = [c for c in columns if c not in prices.columns]
    if missing:
        raise DataError(f"{where}: pair names columns that do not exist: {missing[:10]}")
    values = prices.select([pl.col(c).cast(pl.Float64) for c in columns]).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
    logs[~np.isfinite(logs)] = np.nan
    return logs


def compute_targets(prices: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """All targets of `pairs` (columns target, lag, pair) from a price frame (date_id + price columns).

    Rows of `prices` must be consecutive date_ids (the competition's train.csv is); the result has the same
    date_ids and one float64 column per target, in `pairs` order.
    """
    date_ids = prices["date_id"].to_numpy()
    if len(date_ids) > 1 and not np.all(np.diff(date_ids) == 1):
        raise DataError("prices: date_id must be consecutive integers (targets are defined on rows)")
    columns = price_columns(pairs)
    matrix = compute_target_matrix(
        log_price_matrix(prices, columns), columns, pairs["pair"].to_list(), pairs["lag"].to_list()
    )
    frame = pl.DataFrame(matrix, schema=pairs["target"].to_list(), orient="row")
    return frame.insert_column(0, pl.Series("date_id", date_ids))
