"""The served batches, never trusted input: the history the predictor keeps, and the reading of each call's frames.

The evaluation API passes no history: each call brings a one-row `test` frame and the four lag batches of the
labels released that day (shared COMPETITION.md, "The evaluation API"), and any column of them may be absent, null,
text or of any type. So:

- `History` holds the raw feature rows of `train.csv` and of every served date, and the labels of
  `train_labels.csv` and of every lag batch, keyed by date_id: a served row re-covering a stored date replaces its
  known values, a null never erases one (an all-null served row cannot overwrite a good train.csv row), and a value
  beyond `PLAUSIBLE_FACTOR` x train.csv's largest of its column (1e300) is read as null; a lag-k batch row served on
  date t holds the labels of date t - k - 1 (`spread.targets.release_date`). The window for date t is built from
  rows up to t only (`spread.windows.window_for_latest`), so nothing released after t can reach it.
- `Intake` reads one call's batches into the history: every column is optional, text and +-inf read as null, a bad
  lag batch costs its labels only, and each quirk (repeated, backward or skipped dates, extra or missing columns,
  a price <= 0, a label_date_id that contradicts the release rule) is counted by kind in `spread.problems.Problems`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from spread.competition import as_date_id
from spread.errors import DataError
from spread.features import column_kind
from spread.problems import Problems
from spread.targets import release_date

LAGS = (1, 2, 3, 4)
"""Lag of each of the four label batches, in argument order."""
PLAUSIBLE_FACTOR = 1000.0
"""A served value more than this many times train.csv's largest |value| of its column (e.g. 1e300) is read as null."""


# ----------------------------------------------------------------------------------------------------------------
# history


class History:
    """Raw feature rows and known labels keyed by date_id (latest known value wins), from train files and served
    batches."""

    def __init__(self, feature_names: list[str], target_names: list[str], target_lags: Sequence[int]):
        self.feature_names = list(feature_names)
        self.target_names = list(target_names)
        self.target_lags = np.asarray(target_lags, dtype=np.int64)
        self.features: dict[int, np.ndarray] = {}
        """date_id -> (F,) float64 raw values, NaN where missing."""
        self.labels: dict[int, np.ndarray] = {}
        """label date_id -> (N,) float64 labels, NaN where unknown."""
        self.columns_by_lag = {int(lag): np.flatnonzero(self.target_lags == lag) for lag in np.unique(self.target_lags)}
        self.bounds = np.full(len(self.feature_names), np.inf)
        """(F,) largest plausible |value| of each feature (PLAUSIBLE_FACTOR x train.csv's largest); beyond is null."""
        self.start: int | None = None
        """The first date of the published history (train.csv's), None before any row is stored."""

    @classmethod
    def from_frames(cls, train: pl.DataFrame, labels: pl.DataFrame, pairs: pl.DataFrame) -> History:
        """The published history: train.csv rows and train_labels.csv rows (Float64 frames with date_id)."""
        feature_names = [c for c in train.columns if c != "date_id"]
        history = cls(feature_names, pairs["target"].to_list(), pairs["lag"].to_list())
        values = train.select(feature_names).to_numpy().astype(np.float64)
        for date_id, row in zip(train["date_id"].to_list(), values):
            history.features[int(date_id)] = row
        history.start = min(history.features) if history.features else None
        if len(values):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-null column has no bound
                largest = np.nanmax(np.abs(values), axis=0)
            history.bounds = np.where(np.isfinite(largest), PLAUSIBLE_FACTOR * (largest + 1.0), np.inf)
        label_values = labels.select(history.target_names).to_numpy().astype(np.float64)
        for date_id, row in zip(labels["date_id"].to_list(), label_values):
            history.labels[int(date_id)] = row
        return history

    @property
    def last_date(self) -> int | None:
        return max(self.features) if self.features else None

    def missing_dates(self, last_date: int, n_rows: int) -> list[int]:
        """The dates of the `n_rows` ending at `last_date` that have no stored row (neither train.csv's nor a served
        one): a window built from them reads those rows as missing. Dates before the published history's first do
        not count (a window that early is short, as in training), unless `last_date` itself precedes that history."""
        first = last_date - n_rows + 1
        if self.start is not None and last_date >= self.start:
            first = max(first, self.start)
        return [date for date in range(first, last_date + 1) if date not in self.features]

    def add_features(self, date_id: int, values: np.ndarray) -> None:
        """Store one served row: its known values replace those of an earlier row of the same date, a null never
        erases a known value (an all-null served row leaves the train.csv row as it was)."""
        values = np.asarray(values, dtype=np.float64)
        stored = self.features.get(int(date_id))
        self.features[int(date_id)] = values if stored is None else np.where(np.isnan(values), stored, values)

    def add_labels(self, label_date_id: int, columns: np.ndarray, values: np.ndarray) -> None:
        """Store released labels of `label_date_id` in target `columns`; a null never erases a known value."""
        row = self.labels.get(int(label_date_id))
        if row is None:
            row = np.full(len(self.target_names), np.nan)
            self.labels[int(label_date_id)] = row
        known = ~np.isnan(values)
        row[columns[known]] = values[known]

    def raw_frame(self, last_date: int, n_rows: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """date_id + raw features (`columns`, default all) for the consecutive dates ending at `last_date` (at most
        `n_rows`, none before the first stored date); a date without a stored row is all null."""
        first = max(last_date - n_rows + 1, min(self.features))
        dates = np.arange(first, last_date + 1)
        return stored_frame(self.features, dates, self.feature_names, columns)

    def label_frame(self, first_row_date: int, last_date: int, targets: Sequence[str] | None = None) -> pl.DataFrame:
        """date_id + targets (default all) for every label date whose release can land on a row
        first_row_date..last_date."""
        max_lag = int(self.target_lags.max()) if len(self.target_lags) else 0
        dates = np.arange(first_row_date - max_lag - 1, last_date)
        return stored_frame(self.labels, dates, self.target_names, targets)


def stored_frame(
    rows: dict[int, np.ndarray], date_ids: np.ndarray, names: list[str], columns: Sequence[str] | None
) -> pl.DataFrame:
    """date_id + `columns` (names of the stored rows' entries; default all) for `date_ids`, NaN where not stored."""
    empty = np.full(len(names), np.nan)
    matrix = np.stack([rows.get(int(d), empty) for d in date_ids]) if len(date_ids) else np.empty((0, len(names)))
    if columns is None:
        return frame_from_matrix(matrix, names, date_ids)  # NaN reads as missing, like null
    position = {name: j for j, name in enumerate(names)}
    return frame_from_matrix(matrix[:, [position[c] for c in columns]], list(columns), date_ids)


# ----------------------------------------------------------------------------------------------------------------
# parsing the served batches (never trusted: every column is optional and may be of any type)


def _parse_cell(value: object) -> tuple[float, bool]:
    """(a served cell as a float, whether it was text that is not a number): numbers and numeric text convert,
    None and blank text are NaN, anything else ("n/a") is NaN and counted as text."""
    if value is None:
        return float("nan"), False
    try:
        return float(value), False
    except (TypeError, ValueError):
        return float("nan"), not (isinstance(value, str) and value.strip() == "")


@dataclass
class Cells:
    """A served frame's values of some named columns, and what was wrong with them."""

    values: np.ndarray
    """(rows, len(names)) float64; NaN where absent, null, text, non-finite or implausibly large."""
    missing: list[str]
    """Names the frame has no column for."""
    text: int
    """Cells that held text that is not a number ("n/a")."""
    infinite: int
    """Cells that held +-inf."""
    huge: int
    """Finite cells beyond their column's plausible bound."""


def _numeric_rows(frame: pl.DataFrame, names: list[str], bounds: np.ndarray | None = None) -> Cells:
    """The values of `names` in `frame`: absent columns, text, nulls, +-inf and values beyond `bounds` become NaN.

    The served frames have one row, so converting the row's Python values beats a polars cast per column
    (an all-empty column arrives as String: its None cells become NaN like any other null).
    """
    position = {name: j for j, name in enumerate(frame.columns)}
    pairs = [(j, position[name]) for j, name in enumerate(names) if name in position]
    values = np.full((frame.height, len(names)), np.nan)
    text = 0
    if pairs and frame.height:
        targets, sources = [j for j, _ in pairs], [k for _, k in pairs]
        for row_index, row in enumerate(frame.rows()):
            parsed = [_parse_cell(row[k]) for k in sources]
            values[row_index, targets] = [value for value, _ in parsed]
            text += sum(is_text for _, is_text in parsed)
    infinite = np.isinf(values)
    huge = np.zeros_like(infinite) if bounds is None else np.isfinite(values) & (np.abs(values) > bounds)
    values[infinite | huge] = np.nan
    missing = [name for name in names if name not in position]
    return Cells(values, missing, text, int(infinite.sum()), int(huge.sum()))


def float_frame(matrix: np.ndarray, names: list[str]) -> pl.DataFrame:
    """One Float64 column per name from a (T, len(names)) float64 matrix (NaN kept).

    Built as one Array series unnested into columns (a few ms for 557 columns, 2-3x faster than a column-wise
    constructor); any polars version without that path gets the plain constructor.
    """
    try:
        frame = pl.Series("values", matrix).arr.to_struct(fields=names).struct.unnest()
    except Exception:  # older polars: no 2-D Array series or no to_struct(fields=...)
        frame = pl.DataFrame(matrix, schema=names, orient="row")
    if frame.columns != names or frame.height != len(matrix) or set(frame.dtypes) - {pl.Float64}:
        frame = pl.DataFrame(matrix, schema=dict.fromkeys(names, pl.Float64), orient="row")
    return frame


def frame_from_matrix(matrix: np.ndarray, names: list[str], date_ids: np.ndarray) -> pl.DataFrame:
    """date_id + one Float64 column per name from a (T, len(names)) float64 matrix (NaN kept)."""
    return float_frame(matrix, names).insert_column(0, pl.Series("date_id", date_ids, dtype=pl.Int64))


def _date_ids(frame: pl.DataFrame, where: str) -> list[int]:
    """The frame's date_ids as integers (`as_date_id`); DataError when absent or not integral."""
    if "date_id" not in frame.columns:
        raise DataError(f"{where}: no date_id column")
    dates = []
    for value in frame["date_id"].to_list():
        date = as_date_id(value)
        if date is None:
            raise DataError(f"{where}: date_id {value!r} is not an integer")
        dates.append(date)
    return dates


# ----------------------------------------------------------------------------------------------------------------
# one call's batches into the history


class Intake:
    """Reads each call's served batches into `history`, counting what was wrong with them into `problems`."""

    def __init__(self, history: History, problems: Problems):
        self.history = history
        self.problems = problems
        self.last_date: int | None = None
        """The date of the latest served row (the date predicted by the latest call)."""
        self.prices = np.array([column_kind(name) != "volume" for name in history.feature_names], dtype=bool)
        """(F,) the columns whose log the features take (prices, rates, OHLC): a value <= 0 there reads as missing."""

    def ingest(self, test: pl.DataFrame, label_batches: Sequence[pl.DataFrame], call: int) -> int:
        """Store the served rows and released labels of call number `call`; returns the date to predict (the
        latest served row's)."""
        for lag, batch in zip(LAGS, label_batches):
            try:
                self._ingest_labels(lag, batch, call)
            except Exception as exc:  # a bad label batch costs its labels, not the prediction
                self.problems.report(
                    "lag-batch-unreadable", f"lag-{lag} batch ignored: {type(exc).__name__}: {exc}", key=str(lag)
                )
        if not isinstance(test, pl.DataFrame):
            raise DataError(f"test batch: expected a polars DataFrame, got {type(test).__name__}")
        self._check_columns(test)
        try:
            dates = _date_ids(test, "test batch")
        except DataError as exc:
            self.problems.report("test-bad-date", str(exc))
            raise
        if not dates:
            self.problems.report("test-no-row", "test batch: no row")
            raise DataError("test batch: no row")
        if len(dates) > 1:
            self.problems.report(
                "test-rows", f"test batch: {len(dates)} rows (date_ids {dates[:5]}); predicting the latest"
            )
        cells = _numeric_rows(test, self.history.feature_names, self.history.bounds)
        self._report_cells("test", "test batch", cells)
        with np.errstate(invalid="ignore"):
            nonpositive = int((cells.values[:, self.prices] <= 0).sum()) if len(cells.values) else 0
        if nonpositive:
            self.problems.report("test-nonpositive-price", f"test batch: {nonpositive} price cell(s) <= 0, read as "
                                 "missing by the features (a price's log)")
        for date_id, row in zip(dates, cells.values):
            if np.isnan(row).all():
                self.problems.report("test-all-null-row", f"test batch: date_id {date_id}: every feature is null"
                                     " (a stored row of that date is kept)")
            self.history.add_features(date_id, row)
        self._check_date(max(dates))
        self.last_date = max(dates)
        return self.last_date

    def _check_date(self, date_id: int) -> None:
        """Count a served date that repeats, goes back or skips ahead of the previous call's."""
        previous = self.last_date
        if previous is None:
            return
        if date_id == previous:
            self.problems.report("date-repeated", f"test batch: date_id {date_id} served again")
        elif date_id < previous:
            self.problems.report("date-backward", f"test batch: date_id {date_id} after {previous}")
        elif date_id > previous + 1:
            self.problems.report("date-gap", f"test batch: date_id {date_id} after {previous} (dates skipped)")

    def _report_cells(self, kind: str, where: str, cells: Cells) -> None:
        if cells.text:
            self.problems.report(f"{kind}-text", f"{where}: {cells.text} text cell(s) read as null")
        if cells.infinite:
            self.problems.report(f"{kind}-inf", f"{where}: {cells.infinite} +-inf cell(s) read as null")
        if cells.huge:
            self.problems.report(
                f"{kind}-implausible", f"{where}: {cells.huge} cell(s) beyond {PLAUSIBLE_FACTOR:g}x train.csv's "
                "largest value of their column read as null"
            )

    def _ingest_labels(self, lag: int, batch: pl.DataFrame | None, call: int) -> None:
        if batch is None:
            self.problems.report("lag-batch-none", f"lag-{lag} batch is None", key=str(lag))
            return
        if not isinstance(batch, pl.DataFrame):
            raise DataError(f"expected a polars DataFrame, got {type(batch).__name__}")
        if lag not in self.history.columns_by_lag:
            return
        if batch.height == 0:
            if call > lag + 1:  # the first lag + 1 dates have no released label yet: empty is normal there
                self.problems.report("lag-batch-empty", f"lag-{lag} batch empty on call {call}", key=str(lag))
            return
        columns = self.history.columns_by_lag[lag]
        names = [self.history.target_names[j] for j in columns]
        cells = _numeric_rows(batch, names)
        if cells.missing:
            self.problems.report(
                "lag-batch-missing-columns", f"lag-{lag} batch: {len(cells.missing)} target column(s) missing, "
                f"taken as null: {cells.missing[:10]}", key=str(lag),
            )
        self._report_cells("lag-batch", f"lag-{lag} batch", cells)
        served = _date_ids(batch, f"lag-{lag} batch")
        stated = None
        if "label_date_id" in batch.columns:
            stated = [_parse_cell(value)[0] for value in batch["label_date_id"].to_list()]
        for index, date_id in enumerate(served):
            label_date = date_id - release_date(0, lag)  # the lag-k label served on this date
            if stated is not None and stated[index] != label_date:
                self.problems.report(
                    "lag-batch-label-date",
                    f"lag-{lag} batch: label_date_id {stated[index]} on date {date_id}, expected {label_date}; "
                    "using the release rule", key=str(lag),
                )
            self.history.add_labels(label_date, columns, cells.values[index])

    def _check_columns(self, test: pl.DataFrame) -> None:
        known = set(self.history.feature_names) | {"date_id", "is_scored"}
        served = set(test.columns)
        extra = [c for c in test.columns if c not in known]
        missing = [c for c in self.history.feature_names if c not in served]
        if extra:
            self.problems.report(
                "test-extra-columns", f"test batch: ignoring {len(extra)} unknown column(s): {extra[:10]}"
            )
        if missing:
            self.problems.report(
                "test-missing-columns", f"test batch: {len(missing)} feature column(s) missing, taken as null: "
                f"{missing[:10]}"
            )
