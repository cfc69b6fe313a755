"""Competitions from price tables: gaps, late/early assets, OHLCV groups, bad input, and the shipped real panel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.competition import check_labels, load_competition
from spread.errors import ConfigError, DataError
from spread.lab.realdata import asset_columns, make_competition, price_panel, realdata
from spread.targets import parse_pair

N_DATES = 60


def _dates(n: int) -> list[str]:
    return [str(d) for d in np.datetime64("2021-01-04") + np.arange(n)]


def _price_table(n: int = N_DATES, seed: int = 0) -> pl.DataFrame:
    """Five assets (one an OHLCV group), a holiday, an asset that starts late and one that stops early."""
    rng = np.random.default_rng(seed)
    walk = np.exp(np.cumsum(rng.normal(0, 0.01, size=(n, 5)), axis=0)) * 50
    frame = pl.DataFrame(
        {
            "Date": _dates(n),
            "AAA": walk[:, 0],
            "BBB": walk[:, 1],
            "CCC": np.where(np.arange(n) < 10, np.nan, walk[:, 2]),  # starts late
            "DDD": np.where(np.arange(n) > n - 15, np.nan, walk[:, 3]),  # stops early
            "EEE_Open": walk[:, 4] * 0.99,
            "EEE_High": walk[:, 4] * 1.01,
            "EEE_Low": walk[:, 4] * 0.98,
            "EEE_Close": walk[:, 4],
            "EEE_Volume": rng.integers(0, 1000, n).astype(float),
        }
    )
    return frame.with_columns(pl.when(pl.int_range(pl.len()) == 20).then(None).otherwise(pl.col("BBB")).alias("BBB"))


def _write(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_csv(path)
    return path


def test_make_competition_writes_a_loadable_folder_whose_labels_match_the_formula(tmp_path: Path) -> None:
    csv = _write(_price_table().reverse(), tmp_path / "prices.csv")  # unsorted rows are sorted
    out = make_competition(csv, tmp_path / "comp", seed=3, test_dates=20, scored=12)
    comp = load_competition(out)
    assert comp.train.height == N_DATES
    assert comp.train["date_id"].to_list() == list(range(N_DATES))
    assert comp.test.height == 20 and comp.test["is_scored"].sum() == 12
    assert comp.scored_dates == list(range(N_DATES - 20, N_DATES - 8))
    result = check_labels(comp)
    assert result.cells > 0 and result.match_share == 1.0 and result.nan_agreement == 1.0
    assert sorted(set(comp.pairs["lag"].to_list())) == [1, 2, 3, 4]
    legs = {leg for pair in comp.pairs["pair"].to_list() for leg in parse_pair(pair)}
    assert legs == {"AAA", "BBB", "CCC", "DDD", "EEE_Close"}  # only the group's close is an asset
    assert comp.pairs.height == 4 * 5  # one target per asset and lag by default
    # the late asset has no price before row 10, so a target on it is NaN there (rows, not trading days)
    single_or_leg = [t for t, p in zip(comp.target_names, comp.pairs["pair"]) if "CCC" in parse_pair(p)]
    assert comp.labels[single_or_leg[0]][:9].is_null().all()
    # the released lag-1 labels of the first test date are those of date_id - 2
    lag1 = comp.lagged_labels[1]
    first = lag1.row(0, named=True)
    assert first["label_date_id"] == first["date_id"] - 2


def test_make_competition_is_reproducible_per_seed(tmp_path: Path) -> None:
    csv = _write(_price_table(), tmp_path / "prices.csv")
    first = load_competition(make_competition(csv, tmp_path / "a", seed=1, n_pairs=6, test_dates=10, scored=5))
    again = load_competition(make_competition(csv, tmp_path / "b", seed=1, n_pairs=6, test_dates=10, scored=5))
    other = load_competition(make_competition(csv, tmp_path / "c", seed=2, n_pairs=6, test_dates=10, scored=5))
    assert first.pairs.height == 24
    assert first.pairs.equals(again.pairs)
    assert not first.pairs.equals(other.pairs)


def test_date_id_gaps_become_rows_of_missing_prices() -> None:
    raw = pl.DataFrame(
        {"date_id": ["0", "1", "2", "5", "6"], "A": ["1", "2", "3", "4", "5"], "B": ["2", "", "2", "2", "2"]}
    )
    panel = price_panel(raw)
    assert panel["date_id"].to_list() == list(range(7))
    assert panel["A"].to_list() == [1.0, 2.0, 3.0, None, None, 4.0, 5.0]
    assert panel["B"].null_count() == 3


def test_calendar_rows_without_any_price_are_dropped() -> None:
    raw = pl.DataFrame({"date": _dates(4), "A": ["1", "", "3", "4"], "B": ["2", "", "", "5"]})
    panel = price_panel(raw)
    assert panel["date_id"].to_list() == [0, 1, 2]
    assert panel["A"].to_list() == [1.0, 3.0, 4.0]


def test_asset_columns_pick_one_close_per_ohlcv_group() -> None:
    columns = ["X_Open", "X_Close", "X_Volume", "Y_adj_open", "Y_adj_close", "Y_close", "Z", "W_open_interest"]
    assert asset_columns(columns) == ["X_Close", "Y_adj_close", "Z"]


def test_non_positive_price_is_an_error_naming_column_and_line(tmp_path: Path) -> None:
    zero_on_row_7 = pl.when(pl.int_range(pl.len()) == 7).then(0.0).otherwise(pl.col("AAA"))
    frame = _price_table().with_columns(zero_on_row_7.alias("AAA"))
    csv = _write(frame, tmp_path / "prices.csv")
    with pytest.raises(DataError, match=r"column 'AAA', line 9: .*not positive"):
        make_competition(csv, tmp_path / "comp", test_dates=10, scored=5)
    assert not (tmp_path / "comp").exists()


def test_zero_volume_is_allowed(tmp_path: Path) -> None:
    frame = _price_table().with_columns(pl.lit(0.0).alias("EEE_Volume"))
    out = make_competition(_write(frame, tmp_path / "prices.csv"), tmp_path / "comp", test_dates=10, scored=5)
    assert load_competition(out).train["EEE_Volume"].sum() == 0.0


def test_duplicate_dates_are_an_error_naming_both_lines(tmp_path: Path) -> None:
    frame = _price_table(10)
    frame = pl.concat([frame, frame.slice(3, 1)])
    with pytest.raises(DataError, match=r"duplicate date 2021-01-07 on lines \[5, 12\]"):
        make_competition(_write(frame, tmp_path / "prices.csv"), tmp_path / "comp", test_dates=4, scored=2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (pl.DataFrame({"when": ["2021-01-01"], "A": ["1"]}), "need one 'date_id' or 'date' column"),
        (pl.DataFrame({"date": ["2021-01-01", "yesterday"], "A": ["1", "2"]}), "line 3: 'yesterday' is not a date"),
        (pl.DataFrame({"date_id": ["0", "x"], "A": ["1", "2"]}), "line 3: 'x' is not an integer"),
        (pl.DataFrame({"date": ["2021-01-01", "2021-01-02"], "A": ["1", "abc"]}), "'A', line 3: 'abc' is not a number"),
    ],
)
def test_malformed_tables_are_errors(raw: pl.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message):
        price_panel(raw)


def test_too_few_dates_for_the_test_window_is_an_error(tmp_path: Path) -> None:
    csv = _write(_price_table(30), tmp_path / "prices.csv")
    with pytest.raises(DataError, match="30 dates, need more than the 134 test dates"):
        make_competition(csv, tmp_path / "comp")


def test_realdata_without_skfolio_names_the_requirements_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    def find_spec(name: str, *args):
        return None if name == "skfolio" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DataError, match="requirements-bench.txt"):
        realdata(tmp_path / "real")


@pytest.mark.skipif(importlib.util.find_spec("skfolio") is None, reason="needs skfolio (requirements-bench.txt)")
def test_realdata_builds_a_competition_from_the_shipped_prices(tmp_path: Path) -> None:
    comp = load_competition(realdata(tmp_path / "real", seed=0))
    assets = {leg for pair in comp.pairs["pair"].to_list() for leg in parse_pair(pair)}
    assert "US_Stock_AAPL_adj_close" in assets and "US_ETF_MTUM_adj_close" in assets
    assert comp.train.height > 5000  # 2000-01 .. 2022-12 trading days
    assert comp.train["US_ETF_MTUM_adj_close"][0] is None  # the factor ETFs start in 2014
    assert comp.test.height == 134 and len(comp.scored_dates) == 90
    assert check_labels(comp).match_share == 1.0


@pytest.mark.skipif(importlib.util.find_spec("skfolio") is None, reason="needs skfolio (requirements-bench.txt)")
def test_realdata_start_that_is_not_a_date_is_an_error_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--start 'notadate': expected a date YYYY-MM-DD"):
        realdata(tmp_path / "real", start="notadate")
    assert not (tmp_path / "real").exists()
