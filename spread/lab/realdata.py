"""Competition folders from real daily price panels: `make-competition` for any table, `realdata` for a shipped one.

A model tuned on the synthetic generator only proves it can find what the generator planted. To measure the margin
over simple baselines on data nobody tuned it to, this module turns any wide daily price table into a folder laid
out exactly like the MITSUI challenge (shared COMPETITION.md), using the same writer as the synthetic generator
(`spread.competition_writer.write_competition`: labels by `spread.targets`, test.csv with `is_scored`, lag files by
the release rule) and the same real-like pair drawing (`spread.competition_writer.draw_pairs`: lags 1-4, mostly
two-leg spreads, some single assets, some reversed).

Input table: a `date_id` (integers) or `date` (calendar dates, any case) column plus numeric columns.
- Rows. With `date`, each row present is a trading date and rows are renumbered 0..n-1 in date order (a holiday is a
  missing row; rows where every price is missing are dropped). With `date_id`, ids are kept and a gap becomes a row
  of missing values, because the target formula counts rows. Unsorted rows are sorted; a repeated date is an error.
- Columns. OHLCV groups are recognised by suffix (`X_Open/High/Low/Close/Volume`, `X_adj_close`, `X_open_interest`,
  `X_settlement_price`, any case): only a group's close (adjusted close when both exist) becomes a target asset, the
  other members stay as features. A column without such a suffix is a price of its own. Missing cells are normal
  (holidays, assets that start late or stop early); an asset with no price at all is kept as a feature only.
  A zero or negative price is an error naming the column and line; volumes and open interest may be zero.

`realdata` builds such a folder from real public daily prices shipped inside the skfolio wheel (20 S&P 500
constituents and the S&P 500 index, 1990-2022, and five MSCI factor ETFs from 2014, i.e. assets that start late),
from 2000 on because earlier prices are rounded to 1/1000 of a dollar, coarse for the low-priced stocks of the
1990s. The files are read from the installed package (`pip install -r requirements-bench.txt`), never downloaded.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from pathlib import Path

import numpy as np
import polars as pl

from spread.competition import coerce_numeric, read_text_csv
from spread.errors import ConfigError, DataError
from spread.competition_writer import draw_pairs, write_competition

log = logging.getLogger(__name__)

DATE_ID, DATE = "date_id", "date"
CLOSE_SUFFIXES = ("_adj_close", "_close")
"""Suffixes of a group's closing price, preferred in this order: the target asset of an OHLCV group."""
PRICE_SUFFIXES = ("_open", "_high", "_low", "_settlement_price")
"""Other price members of a group: features that must be positive like any price."""
COUNT_SUFFIXES = ("_volume", "_open_interest")
"""Non-price members of a group: features that may be zero."""
DEFAULT_TEST_DATES, DEFAULT_SCORED = 134, 90
"""The real competition's test window: 134 served dates, the first 90 scored."""

SKFOLIO_DATA = "datasets/data"
SKFOLIO_FILES = {
    "sp500_dataset.csv.gz": "US_Stock_{}_adj_close",
    "sp500_index.csv.gz": "US_Index_{}_Close",
    "factors_dataset.csv.gz": "US_ETF_{}_adj_close",
}
"""Files bundled in the skfolio wheel (others are downloaded on demand and never used) -> column name pattern."""
REAL_START = "2000-01-01"
"""First date kept from the bundled prices: before it the 3-decimal rounding is coarse for low-priced stocks."""
BENCH_REQUIREMENTS = "requirements-bench.txt"


# ----------------------------------------------------------------------------------------------------------------
# reading a price table


def _suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    return next((s for s in suffixes if lower.endswith(s)), None)


def asset_columns(columns: list[str]) -> list[str]:
    """The target-asset price columns: each OHLCV group's close (adjusted when both exist), every ungrouped column."""
    assets: dict[str, str] = {}
    for name in columns:
        close = _suffix(name, CLOSE_SUFFIXES)
        if close is not None:
            group = name[: -len(close)].lower()
            current = assets.get(group)
            if current is None or _suffix(current, CLOSE_SUFFIXES) == "_close" and close == "_adj_close":
                assets[group] = name
        elif _suffix(name, PRICE_SUFFIXES + COUNT_SUFFIXES) is None:
            assets[name.lower()] = name
    chosen = set(assets.values())
    return [name for name in columns if name in chosen]


def _date_column(frame: pl.DataFrame, where: str) -> str:
    if DATE_ID in frame.columns:
        return DATE_ID
    dates = [c for c in frame.columns if c.lower() == DATE]
    if len(dates) != 1:
        raise DataError(f"{where}: need one 'date_id' or 'date' column, found columns {frame.columns[:10]}")
    return dates[0]


def _parse_dates(text: pl.Series, where: str) -> pl.Series:
    """Calendar dates from strings (ISO dates or datetimes); DataError naming the first unparseable line."""
    dates = text.str.strip_chars().str.to_date(strict=False)
    if dates.null_count():
        stamps = text.str.strip_chars().str.to_datetime(strict=False).dt.date()
        dates = dates.fill_null(stamps)
    bad = dates.is_null().arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{where}: column {text.name!r}, line {row + 2}: {text[row]!r} is not a date")
    return dates


def _sorted_unique(frame: pl.DataFrame, key: str, where: str) -> pl.DataFrame:
    """Rows in `key` order; DataError naming both lines of the first repeated key."""
    lines = frame.with_row_index("_line").with_columns(pl.col("_line") + 2)
    repeated = lines.filter(pl.col(key).is_duplicated()).sort(key, "_line")
    if repeated.height:
        first = repeated.filter(pl.col(key) == repeated[key][0])["_line"].to_list()
        raise DataError(f"{where}: column {key!r}: duplicate date {repeated[key][0]} on lines {first}")
    if not frame[key].is_sorted():
        log.info("%s: rows are not in date order; sorting them", where)
    return frame.sort(key)


def _check_positive(frame: pl.DataFrame, where: str, lines: np.ndarray) -> None:
    """DataError naming column and line of the first zero or negative price (volumes and open interest excepted)."""
    for name in frame.columns:
        if name == DATE_ID or _suffix(name, COUNT_SUFFIXES):
            continue
        bad = (frame[name] <= 0).fill_null(False).arg_true()
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{where}: column {name!r}, line {lines[row]}: price {frame[name][row]} is not positive "
                "(log returns need prices > 0)"
            )


def price_panel(raw: pl.DataFrame, where: str = "prices") -> pl.DataFrame:
    """date_id (consecutive Int64) + Float64 columns from a table of strings or numbers read from `where`."""
    key = _date_column(raw, where)
    columns = [c for c in raw.columns if c not in (DATE_ID, key) and c.lower() != DATE]
    if not columns:
        raise DataError(f"{where}: no price columns besides {key!r}")
    if raw.height == 0:
        raise DataError(f"{where}: no rows")
    text = raw.with_columns(pl.col(c).cast(pl.String) for c in [key, *columns])
    frame = coerce_numeric(text.select(key, *columns), columns, where)
    if key == DATE_ID:
        parsed = frame[key].str.strip_chars().cast(pl.Int64, strict=False)
        bad = parsed.is_null().arg_true()
        if len(bad):
            row = int(bad[0])
            raise DataError(f"{where}: column 'date_id', line {row + 2}: {frame[key][row]!r} is not an integer")
        frame = frame.with_columns(parsed)
    else:
        frame = frame.with_columns(_parse_dates(frame[key], where))
    lines = np.arange(frame.height) + 2
    _check_positive(frame.drop(key), where, lines)
    frame = _sorted_unique(frame, key, where)
    if key == DATE_ID:
        full = pl.DataFrame({DATE_ID: np.arange(frame[key].min(), frame[key].max() + 1, dtype=np.int64)})
        gaps = full.height - frame.height
        if gaps:
            log.info("%s: %d missing date_id(s) become rows of missing values", where, gaps)
        return full.join(frame, on=DATE_ID, how="left").sort(DATE_ID)
    empty = frame.select(pl.all_horizontal(pl.col(columns).is_null())).to_series()
    if empty.any():
        log.info("%s: dropping %d date(s) without any price", where, int(empty.sum()))
    kept = frame.filter(~empty).drop(key)
    return kept.insert_column(0, pl.Series(DATE_ID, np.arange(kept.height, dtype=np.int64)))


def read_prices(path: str | Path) -> pl.DataFrame:
    """A wide price CSV as a `price_panel` (date_id + Float64 columns, consecutive date_ids)."""
    path = Path(path)
    return price_panel(read_text_csv(path), str(path))


# ----------------------------------------------------------------------------------------------------------------
# competitions


def default_pairs_per_lag(n_assets: int) -> int:
    """As many targets per lag as assets (the real competition: 106 and 106), capped by the distinct pairs."""
    return max(1, min(n_assets, n_assets * (n_assets - 1) // 2))


def competition_from_prices(
    prices: pl.DataFrame,
    out: str | Path,
    *,
    seed: int = 0,
    n_pairs: int | None = None,
    test_dates: int = DEFAULT_TEST_DATES,
    scored: int = DEFAULT_SCORED,
    overwrite: bool = False,
    where: str = "prices",
) -> Path:
    """Write a competition folder from a `price_panel` frame; `n_pairs` targets per lag (default: one per asset)."""
    if not 0 < scored <= test_dates:
        raise ConfigError(f"scored dates ({scored}) must be in 1..test dates ({test_dates})")
    if prices.height <= test_dates:
        raise DataError(f"{where}: {prices.height} dates, need more than the {test_dates} test dates")
    columns = [c for c in prices.columns if c != DATE_ID]
    assets = [c for c in asset_columns(columns) if prices[c].null_count() < prices.height]
    unpriced = [c for c in asset_columns(columns) if c not in set(assets)]
    if unpriced:
        log.warning("%s: column(s) without any price kept as features only: %s", where, unpriced[:10])
    if len(assets) < 2:
        raise DataError(f"{where}: need at least 2 price columns with data to draw pairs, found {assets}")
    per_lag = default_pairs_per_lag(len(assets)) if n_pairs is None else n_pairs
    if per_lag < 1:
        raise ConfigError(f"pairs per lag must be >= 1, got {per_lag}")
    pairs = draw_pairs(assets, per_lag, rng=np.random.default_rng(seed))
    return write_competition(out, prices, pairs, n_test=test_dates, n_scored=scored, overwrite=overwrite)


def make_competition(
    prices_csv: str | Path,
    out: str | Path,
    seed: int = 0,
    n_pairs: int | None = None,
    test_dates: int = DEFAULT_TEST_DATES,
    scored: int = DEFAULT_SCORED,
    overwrite: bool = False,
) -> Path:
    """`python -m spread make-competition`: a competition folder from a wide daily price CSV (see module doc)."""
    return competition_from_prices(
        read_prices(prices_csv), out, seed=seed, n_pairs=n_pairs, test_dates=test_dates, scored=scored,
        overwrite=overwrite, where=str(prices_csv),
    )


# ----------------------------------------------------------------------------------------------------------------
# the shipped real panel


def _skfolio_data_dir() -> Path:
    """The folder of data files inside the installed skfolio package, found without importing skfolio."""
    spec = importlib.util.find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"realdata needs the optional benchmark packages: pip install -r {BENCH_REQUIREMENTS} "
            "(skfolio ships the real daily prices inside its wheel)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / SKFOLIO_DATA


def load_real_prices(start: str = REAL_START) -> pl.DataFrame:
    """`date` + adjusted daily closes of the bundled skfolio panels from `start` on (26 columns, outer-joined)."""
    folder = _skfolio_data_dir()
    merged: pl.DataFrame | None = None
    for file_name, pattern in SKFOLIO_FILES.items():
        path = folder / file_name
        if not path.is_file():
            raise DataError(
                f"{path}: not found in the installed skfolio; reinstall with pip install -r {BENCH_REQUIREMENTS}"
            )
        with gzip.open(path, "rb") as handle:
            frame = pl.read_csv(handle.read(), infer_schema_length=None)
        frame = frame.rename({c: (DATE if c == "Date" else pattern.format(c)) for c in frame.columns})
        frame = frame.with_columns(pl.col(DATE).str.to_date())
        merged = frame if merged is None else merged.join(frame, on=DATE, how="full", coalesce=True)
    start_date = pl.Series([str(start)]).str.to_date("%Y-%m-%d", strict=False)[0]
    if start_date is None:
        raise ConfigError(f"--start {start!r}: expected a date YYYY-MM-DD")
    return merged.filter(pl.col(DATE) >= start_date).sort(DATE)


def realdata(
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    start: str = REAL_START,
    n_pairs: int | None = None,
    test_dates: int = DEFAULT_TEST_DATES,
    scored: int = DEFAULT_SCORED,
) -> Path:
    """`python -m spread realdata`: a competition folder from the real prices shipped with skfolio (see module doc)."""
    prices = price_panel(load_real_prices(start), "skfolio prices")
    return competition_from_prices(
        prices, out, seed=seed, n_pairs=n_pairs, test_dates=test_dates, scored=scored, overwrite=overwrite,
        where="skfolio prices",
    )
