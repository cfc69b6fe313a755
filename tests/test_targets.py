"""The target formula against a literal transcription of COMPETITION.md, cell by cell."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from spread.errors import DataError
from spread.targets import compute_targets, parse_pair, release_date


def brute_force(prices: dict[str, list[float | None]], pair: str, lag: int, t: int) -> float:
    def r(name: str) -> float:
        series = prices[name]
        if t + lag + 1 >= len(series):
            return math.nan
        a, b = series[t + lag + 1], series[t + 1]
        return math.nan if a is None or b is None else math.log(a / b)

    legs = pair.split(" - ")
    return r(legs[0]) - (r(legs[1]) if len(legs) == 2 else 0.0)


def test_matches_the_formula_cell_by_cell() -> None:
    rng = np.random.default_rng(1)
    n = 25
    prices = {name: list(np.exp(rng.normal(0, 0.02, n).cumsum()) * 50) for name in ("X", "Y", "Z")}
    prices["Y"][7] = None
    pairs = pl.DataFrame({
        "target": ["target_0", "target_1", "target_2", "target_3"],
        "lag": [1, 3, 4, 2],
        "pair": ["X - Y", "Y - X", "Z", "X - Z"],
    })
    frame = pl.DataFrame({"date_id": np.arange(n), **{k: pl.Series(v, dtype=pl.Float64) for k, v in prices.items()}})
    out = compute_targets(frame, pairs)
    assert out.columns == ["date_id", *pairs["target"].to_list()]
    for row in pairs.iter_rows(named=True):
        got = out[row["target"]].to_numpy()
        want = np.array([brute_force(prices, row["pair"], row["lag"], t) for t in range(n)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    # The return starts at t + 1: the lag-1 label of date 5 uses prices 6 and 7, so a gap at 7 blanks it
    assert np.isnan(out["target_0"][5]) and np.isnan(out["target_0"][6]) and not np.isnan(out["target_0"][4])


def test_release_rule() -> None:
    assert release_date(10, 1) == 12 and release_date(10, 4) == 15


@pytest.mark.parametrize("bad", ["A -", "- B", "A - B - C", "A  B", ""])
def test_malformed_pairs(bad: str) -> None:
    with pytest.raises(DataError, match="malformed pair"):
        parse_pair(bad)


def test_unknown_column_and_gaps_in_date_ids() -> None:
    pairs = pl.DataFrame({"target": ["target_0"], "lag": [1], "pair": ["A - Q"]})
    frame = pl.DataFrame({"date_id": [0, 1, 2], "A": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match="Q"):
        compute_targets(frame, pairs)
    with pytest.raises(DataError, match="consecutive"):
        compute_targets(frame.with_columns(pl.Series("date_id", [0, 1, 3])), pairs.with_columns(pair=pl.lit("A")))
