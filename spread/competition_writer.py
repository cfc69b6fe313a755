"""Writing a competition folder laid out like the MITSUI challenge from a price/feature panel.

One writer for every producer of competition data: the synthetic generator (`spread.synth`) and, later,
`make-competition` on real prices. Given `train` (date_id + features) and `target_pairs`, it derives everything
else the way the organisers did (shared COMPETITION.md):

- train_labels.csv from the prices with `spread.targets.compute_targets` (so labels always match the formula);
- test.csv = the last `n_test` train dates, `is_scored` true on the first `n_scored` of them;
- lagged_test_labels/test_labels_lag_{k}.csv: for each test date d, the lag-k labels of date d - k - 1 (the day
  they become known, `spread.targets.release_date`), with `label_date_id` as the last column.

`draw_pairs` draws real-like target pairs: mostly "A - B" spreads, some single assets, the same pair at several
lags and a few reversed. Files are written with polars `write_csv`; NaN labels are written as empty cells, like the
released files. Nothing outside the output folder is touched, and a non-empty folder is refused unless the caller
asks to overwrite (then only the files this module owns are replaced).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from spread.errors import ConfigError, DataError
from spread.targets import PAIR_SEPARATOR, compute_targets, parse_pair, release_date

TRAIN, LABELS, PAIRS, TEST = "train.csv", "train_labels.csv", "target_pairs.csv", "test.csv"
LAG_DIR = "lagged_test_labels"
ORACLE_FILE = "oracle_predictions.csv"
"""The synthetic generator's answer key (true conditional expectations); owned here so that overwriting a folder
never leaves a stale one beside new prices."""
PAIR_POOL_FACTOR = 1.5
"""Distinct pairs drawn per lag's worth of two-leg targets: with 4 lags each pair appears at ~2.7 lags."""


def lag_file(lag: int) -> str:
    return f"{LAG_DIR}/test_labels_lag_{lag}.csv"


def _check_train(train: pl.DataFrame) -> None:
    if "date_id" not in train.columns:
        raise DataError("train: missing column 'date_id'")
    if train.height == 0:
        raise DataError("train: no rows")
    date_ids = train["date_id"].to_numpy()
    if len(date_ids) > 1 and not np.all(np.diff(date_ids) == 1):
        raise DataError("train: column 'date_id' must be consecutive integers")
    for name, dtype in train.schema.items():
        if name != "date_id" and not dtype.is_numeric():
            raise DataError(f"train: feature column {name!r} has dtype {dtype}, expected a number")


def _check_pairs(pairs: pl.DataFrame, features: set[str]) -> None:
    for column in ("target", "lag", "pair"):
        if column not in pairs.columns:
            raise DataError(f"target_pairs: missing column {column!r}")
    for row, pair in enumerate(pairs["pair"].to_list()):
        for leg in parse_pair(pair, where=f"target_pairs: row {row}"):
            if leg not in features:
                raise DataError(f"target_pairs: row {row}: pair {pair!r} names {leg!r}, which is not a train column")


def refuse_non_empty(out: Path, overwrite: bool) -> None:
    """Raise DataError if `out` is a file, or a non-empty folder and not `overwrite` (never clobber user files)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: folder exists and is not empty; refusing to overwrite it (pass --overwrite to replace the files this command writes)")


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Create `out`; refuse a non-empty one unless `overwrite`, then remove only the files this module writes."""
    refuse_non_empty(out, overwrite)
    if out.is_dir():
        owned = [out / name for name in (TRAIN, LABELS, PAIRS, TEST, ORACLE_FILE)]
        owned += sorted((out / LAG_DIR).glob("test_labels_lag_*.csv"))
        for path in owned:
            if path.is_file():
                path.unlink()
    (out / LAG_DIR).mkdir(parents=True, exist_ok=True)


def lagged_labels(labels: pl.DataFrame, pairs: pl.DataFrame, test_dates: np.ndarray, lag: int) -> pl.DataFrame:
    """One row per test date d: date_id, the lag-`lag` labels of date d - lag - 1 (null before the panel) and
    label_date_id = d - lag - 1 last."""
    targets = pairs.filter(pl.col("lag") == lag)["target"].to_list()
    label_dates = test_dates - release_date(0, lag)  # the date whose lag-`lag` label is released on d
    wanted = pl.DataFrame({"date_id": test_dates, "label_date_id": label_dates})
    released = labels.select(pl.col("date_id").alias("label_date_id"), *targets)
    joined = wanted.join(released, on="label_date_id", how="left").sort("date_id")
    return joined.select("date_id", *targets, "label_date_id")


def write_competition(
    out: str | Path, train: pl.DataFrame, pairs: pl.DataFrame, *, n_test: int, n_scored: int, overwrite: bool = False
) -> Path:
    """Write a complete competition folder from `train` (date_id + Float64 features) and `pairs` (target, lag, pair).

    Returns `out`. Refuses (DataError) a non-empty `out` unless `overwrite`.
    """
    out = Path(out)
    _check_train(train)
    _check_pairs(pairs, set(train.columns) - {"date_id"})
    if not 0 <= n_scored <= n_test <= train.height or n_test == 0:
        raise DataError(
            f"train: need 0 <= n_scored ({n_scored}) <= n_test ({n_test}) <= rows ({train.height}) and n_test >= 1"
        )
    pairs = pairs.select(
        pl.col("target").cast(pl.String), pl.col("lag").cast(pl.Int64), pl.col("pair").cast(pl.String)
    )
    features = [name for name in train.columns if name != "date_id"]
    train = train.with_columns(
        pl.col("date_id").cast(pl.Int64), *(pl.col(name).cast(pl.Float64).fill_nan(None) for name in features)
    )
    labels = compute_targets(train, pairs)
    labels = labels.with_columns(pl.col(name).fill_nan(None) for name in pairs["target"].to_list())
    test = train.tail(n_test).with_columns((pl.int_range(0, n_test) < n_scored).alias("is_scored"))
    test_dates = test["date_id"].to_numpy()

    prepare_folder(out, overwrite)
    train.write_csv(out / TRAIN)
    labels.write_csv(out / LABELS)
    pairs.write_csv(out / PAIRS)
    test.write_csv(out / TEST)
    for lag in sorted(set(pairs["lag"].to_list())):
        lagged_labels(labels, pairs, test_dates, lag).write_csv(out / lag_file(lag))
    return out


def _coverage_pairs(order: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Consecutive pairs of a shuffled index list, so that every asset is a leg at least once."""
    pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
    if len(order) % 2 == 1:
        partner = int(rng.choice(order[:-1]))
        pairs.append((order[-1], partner))
    return pairs


def _pair_pool(n_assets: int, n_two: int, rng: np.random.Generator) -> tuple[list[tuple[int, int]], int]:
    """Distinct oriented pairs of asset indices; the first `n_coverage` of them cover every asset."""
    coverage = _coverage_pairs([int(i) for i in rng.permutation(n_assets)], rng)
    covered = {frozenset(p) for p in coverage}
    all_pairs = list(itertools.combinations(range(n_assets), 2))
    pool_size = min(len(all_pairs), max(len(coverage), math.ceil(n_two * PAIR_POOL_FACTOR)))
    pool = list(coverage)
    for k in rng.permutation(len(all_pairs)):
        if len(pool) >= pool_size:
            break
        a, b = all_pairs[int(k)]
        if frozenset((a, b)) not in covered:
            pool.append((a, b) if rng.random() < 0.5 else (b, a))
    return pool, len(coverage)


def draw_pairs(
    assets: list[str],
    n_per_lag: int,
    lags: Sequence[int] = (1, 2, 3, 4),
    *,
    rng: np.random.Generator,
    single_share: float = 0.1,
    reversed_share: float = 0.05,
) -> pl.DataFrame:
    """Real-like target pairs (columns target, lag, pair): `n_per_lag` per lag, numbered target_0.. lag by lag.

    Mostly "A - B" spreads drawn from a shared pool (so the same pair recurs at several lags), `single_share` single
    assets, and each two-leg target reversed ("B - A") with probability `reversed_share`. Every asset is a leg of some
    target. Within one lag no pair (in either orientation) or single asset repeats.
    """
    n_assets, n_lags = len(assets), len(lags)
    n_single = round(single_share * n_per_lag)
    n_two = n_per_lag - n_single
    if n_assets < 2 or n_two > n_assets * (n_assets - 1) // 2 or n_single > n_assets:
        raise ConfigError(f"draw_pairs: {n_per_lag} targets per lag cannot be drawn from {n_assets} assets")
    pool, n_coverage = _pair_pool(n_assets, n_two, rng)
    if math.ceil(n_coverage / n_lags) > n_two:
        raise ConfigError(
            f"draw_pairs: {n_two} two-leg targets per lag over {n_lags} lags cannot cover all {n_assets} assets"
        )
    single_pool = rng.permutation(n_assets)[: min(n_assets, math.ceil(n_single * PAIR_POOL_FACTOR))]

    rows = []
    for lag_index, lag in enumerate(lags):
        picked = list(range(lag_index, n_coverage, n_lags))  # this lag's share of the coverage pairs
        taken = set(picked)
        rest = [int(k) for k in rng.permutation(len(pool)) if int(k) not in taken]
        picked += rest[: n_two - len(picked)]
        specs = []
        for k in picked:
            a, b = pool[k]
            if rng.random() < reversed_share:
                a, b = b, a
            specs.append(f"{assets[a]}{PAIR_SEPARATOR}{assets[b]}")
        specs += [assets[int(i)] for i in rng.choice(single_pool, size=n_single, replace=False)]
        for offset, k in enumerate(rng.permutation(n_per_lag)):
            rows.append((f"target_{lag_index * n_per_lag + offset}", int(lag), specs[int(k)]))
    return pl.DataFrame(rows, schema={"target": pl.String, "lag": pl.Int64, "pair": pl.String}, orient="row")
