"""Reading a competition folder laid out like the MITSUI challenge, schema-driven; strict, or tolerant for serving.

Folder layout (see shared COMPETITION.md): train.csv, train_labels.csv, target_pairs.csv, test.csv and
lagged_test_labels/test_labels_lag_{1..4}.csv. Nothing about sizes is hard-coded: feature columns, targets, lags and
pairs come from the files. Every cell is read as text and then coerced (so a text cell beyond polars' type-inference
rows cannot fail the read), and blank lines (an all-empty row, e.g. a trailing newline too many) are not data.

Strict mode (training, `check-labels`): every inconsistency raises `DataError` naming the file, column and line
(line 1 is the header, so the first data row is line 2). Serving mode (`serving=True`, the predictor): only what a
model needs is read (train.csv, train_labels.csv, target_pairs.csv; test.csv and the lag files are what the API
serves, never a reason to refuse the model), and what can be repaired is repaired with one warning naming file,
column and line: a text cell becomes null, label columns are matched by name, rows out of date order are sorted (of
a repeated date the last line is kept; a row without an integer date_id is dropped). Input files are only ever read.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from spread.errors import DataError
from spread.targets import parse_pair

log = logging.getLogger(__name__)

TRAIN, LABELS, PAIRS, TEST = "train.csv", "train_labels.csv", "target_pairs.csv", "test.csv"
LAG_DIR = "lagged_test_labels"
VALID_LAGS = range(1, 5)


def lag_file_name(lag: int) -> str:
    return f"{LAG_DIR}/test_labels_lag_{lag}.csv"


@dataclass
class Competition:
    """The parsed files of one competition folder."""

    root: Path
    train: pl.DataFrame
    """date_id (Int64) + one Float64 column per feature, in file order."""
    labels: pl.DataFrame
    """date_id + one Float64 column per target, in target_pairs order."""
    pairs: pl.DataFrame
    """target (str), lag (Int64), pair (str): one row per target."""
    test: pl.DataFrame | None = None
    """date_id + features + is_scored (Boolean); None when the folder has no test.csv and it was not required."""
    lagged_labels: dict[int, pl.DataFrame] = field(default_factory=dict)
    """lag -> date_id + that lag's targets + label_date_id."""

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.train.columns if c != "date_id"]

    @property
    def target_names(self) -> list[str]:
        return self.pairs["target"].to_list()

    def in_target_order(self, names: list[str]) -> "Competition":
        """The same competition with its targets (pairs rows, label columns) in the order of `names`, a permutation
        of `target_names` (serving a run whose target_pairs.csv listed them in that order)."""
        if sorted(names) != sorted(self.target_names):
            raise DataError(f"{self.root / PAIRS}: the targets to reorder by are not this competition's")
        position = {name: row for row, name in enumerate(self.target_names)}
        pairs = self.pairs[[position[name] for name in names]]
        return replace(self, pairs=pairs, labels=self.labels.select("date_id", *names))

    @property
    def target_lags(self) -> np.ndarray:
        return self.pairs["lag"].to_numpy().astype(np.int64)

    @property
    def scored_dates(self) -> list[int]:
        if self.test is None:
            return []
        return self.test.filter(pl.col("is_scored"))["date_id"].to_list()


def read_text_csv(path: Path) -> pl.DataFrame:
    """Every cell of a CSV file as text (null when empty), trailing blank lines dropped; DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pl.read_csv(path, infer_schema_length=0)
    except Exception as exc:  # polars raises several types for malformed csv
        raise DataError(f"{path}: cannot be parsed as CSV: {' '.join(str(exc).split())}") from exc
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # polars would rename the second one (name_duplicated_0) and read it as another column
        raise DataError(f"{path}: line 1: column name(s) given twice: {repeated[:10]}")
    return drop_trailing_blank_rows(frame)


def drop_trailing_blank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` without its trailing blank lines (every cell null or, in a text column, only whitespace): they are
    not data. A blank line inside the file stays, so that the reader's checks name its line."""
    if not frame.width:
        return frame
    blank_cell = [
        pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") if frame.schema[c] == pl.String
        else pl.col(c).is_null()
        for c in frame.columns
    ]
    blank = frame.select(pl.all_horizontal(blank_cell)).to_series().to_numpy()
    kept = 0 if blank.all() else len(blank) - int(np.argmin(blank[::-1]))
    return frame.head(kept)


def as_date_id(value: object) -> int | None:
    """A date_id cell as an integer (12, 12.0, "12" and " 12 " alike); None when it is not one ("x", blank, 12.5,
    nan, inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == round(number) else None


def _check_date_ids(frame: pl.DataFrame, where: str, strict: bool = True) -> pl.DataFrame:
    """`frame` with an Int64 date_id column (12 and 12.0 alike; null where a cell is not an integer). Strict: a
    date_id that is not an integer, repeats or goes back raises DataError naming the line. Otherwise (serving) one
    warning names the first such line, and `in_date_order` repairs the frame once its cells are coerced (so that
    their warnings still name the file's lines)."""
    if "date_id" not in frame.columns:
        raise DataError(f"{where}: missing column 'date_id'")
    raw = frame["date_id"]
    parsed = pl.Series("date_id", [as_date_id(value) for value in raw.to_list()], dtype=pl.Int64)
    bad = (parsed.is_null()).arg_true()
    problem = None
    if len(bad):
        row = int(bad[0])
        problem = f"{where}: column 'date_id', line {row + 2}: {raw[row]!r} is not an integer date_id"
    else:
        values = parsed.to_numpy()
        steps = np.diff(values)
        if np.any(steps == 0):
            row = int(np.argmax(steps == 0)) + 1
            problem = f"{where}: column 'date_id', line {row + 2}: duplicate date_id {values[row]}"
        elif np.any(steps < 0):
            row = int(np.argmax(steps < 0)) + 1
            problem = (f"{where}: column 'date_id', line {row + 2}: date_id {values[row]} after {values[row - 1]} "
                       "(date_id must be strictly increasing)")
    if problem is not None:
        if strict:
            raise DataError(problem)
        log.warning("%s; repaired: rows sorted by date_id, of a repeated date the last line kept, rows without an "
                    "integer date_id dropped", problem)
    return frame.with_columns(parsed)


def in_date_order(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame of `_check_date_ids(strict=False)` in strictly increasing date_id order: rows without a date_id
    dropped, of a repeated date the last line kept (a later row of a date supersedes, as served rows do)."""
    dates = frame["date_id"]
    if dates.null_count() == 0 and (dates.len() < 2 or bool((dates.diff().drop_nulls() > 0).all())):
        return frame
    return frame.filter(pl.col("date_id").is_not_null()).unique("date_id", keep="last", maintain_order=True).sort(
        "date_id")


def coerce_numeric(frame: pl.DataFrame, columns: list[str], where: str, *, strict: bool = True) -> pl.DataFrame:
    """Cast `columns` to Float64: empty/all-null String columns become null floats, NaN and +-inf become null.

    With `strict`, a non-numeric text cell raises DataError naming column and line; otherwise it becomes null,
    with one warning naming the first such cell and the count (the serving path never raises).
    """
    casts, text_cells, first = [], 0, None
    for name in columns:
        col = frame[name]
        as_float = col.cast(pl.Float64, strict=False)
        if col.dtype == pl.String:
            bad = (as_float.is_null() & col.is_not_null() & (col.str.strip_chars() != "")).arg_true()
            if len(bad):
                row = int(bad[0])
                message = f"{where}: column {name!r}, line {row + 2}: {col[row]!r} is not a number"
                if strict:
                    raise DataError(message)
                text_cells += len(bad)
                first = first or message
        casts.append(as_float.alias(name))
    if text_cells:
        log.warning("%s; %d text cell(s) read as null", first, text_cells)
    out = frame.with_columns(casts)
    infinite = [n for n in columns if out[n].is_infinite().any()]
    if infinite:
        log.warning("%s: +-inf replaced by null in %d column(s): %s", where, len(infinite), infinite[:20])
    finite = [pl.when(pl.col(n).is_finite()).then(pl.col(n)).otherwise(None).alias(n) for n in columns]
    return out.with_columns(finite)


def _read_pairs(root: Path) -> pl.DataFrame:
    where = root / PAIRS
    raw = read_text_csv(where)
    for column in ("target", "lag", "pair"):
        if column not in raw.columns:
            raise DataError(f"{where}: missing column {column!r}")
    lags = raw["lag"].cast(pl.Int64, strict=False)
    for row, (text, lag) in enumerate(zip(raw["lag"].to_list(), lags.to_list())):
        if lag is None or lag not in VALID_LAGS:
            raise DataError(f"{where}: column 'lag', line {row + 2}: {text!r} is not a lag in 1..4")
    for row, pair in enumerate(raw["pair"].to_list()):
        parse_pair(pair or "", where=f"{where}: column 'pair', line {row + 2}")
    duplicated = raw["target"].is_duplicated().arg_true()
    if len(duplicated):
        row = int(duplicated[0])
        raise DataError(f"{where}: column 'target', line {row + 2}: duplicate target {raw['target'][row]!r}")
    return raw.select("target", lags.alias("lag"), "pair")


def _check_pair_columns(pairs: pl.DataFrame, features: list[str], where: Path) -> None:
    known = set(features)
    for row, pair in enumerate(pairs["pair"].to_list()):
        for leg in parse_pair(pair):
            if leg not in known:
                raise DataError(
                    f"{where}: column 'pair', line {row + 2}: {pair!r} names column {leg!r} "
                    f"which does not exist in {TRAIN}"
                )


def _read_labels(root: Path, targets: list[str], train_dates: pl.Series, serving: bool = False) -> pl.DataFrame:
    """train_labels.csv; serving mode matches its columns by name (a missing target is all null, an unknown column
    is dropped) and accepts date_ids that differ from train.csv's, each with a warning."""
    where = root / LABELS
    frame = _check_date_ids(read_text_csv(where), str(where), strict=not serving)
    columns = [c for c in frame.columns if c != "date_id"]
    if columns != targets:
        extra = [c for c in columns if c not in set(targets)]
        missing = [c for c in targets if c not in set(columns)]
        message = (
            f"{where}: label columns disagree with {PAIRS}: missing {missing[:10]}, unexpected {extra[:10]}"
            + ("" if missing or extra else " (same names, different order)")
        )
        if not serving:
            raise DataError(message)
        log.warning("%s; matching them by name", message)
        absent = [pl.lit(None, dtype=pl.String).alias(c) for c in missing]
        frame = frame.with_columns(absent).select("date_id", *targets)
    frame = coerce_numeric(frame, targets, str(where), strict=not serving)
    if serving:
        frame = in_date_order(frame)
    if not frame["date_id"].equals(train_dates):
        message = f"{where}: column 'date_id' differs from {TRAIN}'s date_id"
        if not serving:
            raise DataError(message)
        log.warning("%s; labels are keyed by their own date_id", message)
    return frame


def _read_features(
    path: Path, features: list[str] | None, extra: tuple[str, ...] = (), strict: bool = True
) -> pl.DataFrame:
    frame = _check_date_ids(read_text_csv(path), str(path), strict=strict)
    if frame.height == 0:
        raise DataError(f"{path}: no data rows")
    names = [c for c in frame.columns if c != "date_id" and c not in extra]
    if features is not None and names != features:
        missing = [c for c in features if c not in set(names)]
        unexpected = [c for c in names if c not in set(features)]
        raise DataError(f"{path}: feature columns differ from {TRAIN}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    frame = coerce_numeric(frame, names, str(path), strict=strict)
    return frame if strict else in_date_order(frame)


def _read_test(root: Path, features: list[str]) -> pl.DataFrame:
    where = root / TEST
    frame = _read_features(where, features, extra=("is_scored",))
    if "is_scored" not in frame.columns:
        raise DataError(f"{where}: missing column 'is_scored'")
    text = frame["is_scored"].str.to_lowercase()
    bad = (~text.is_in(["true", "false", "1", "0"])).arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{where}: column 'is_scored', line {row + 2}: {frame['is_scored'][row]!r} is not a boolean")
    return frame.with_columns(text.is_in(["true", "1"]).alias("is_scored"))


def _read_lag_file(root: Path, lag: int, pairs: pl.DataFrame) -> pl.DataFrame:
    where = root / lag_file_name(lag)
    frame = _check_date_ids(read_text_csv(where), str(where))
    if "label_date_id" not in frame.columns:
        raise DataError(f"{where}: missing column 'label_date_id'")
    expected = pairs.filter(pl.col("lag") == lag)["target"].to_list()
    columns = [c for c in frame.columns if c not in ("date_id", "label_date_id")]
    if columns != expected:
        raise DataError(f"{where}: target columns disagree with the lag-{lag} targets of {PAIRS}")
    label_dates = frame["label_date_id"].cast(pl.Int64, strict=False)
    gaps = frame["date_id"] - label_dates
    bad = (gaps.is_null() | (gaps != lag + 1)).arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{where}: column 'label_date_id', line {row + 2}: date_id {frame['date_id'][row]} - label_date_id "
            f"{frame['label_date_id'][row]} must equal lag + 1 = {lag + 1}"
        )
    return coerce_numeric(frame.with_columns(label_dates.alias("label_date_id")), columns, str(where))


def load_competition(root: str | Path, *, require_test: bool = True, serving: bool = False) -> Competition:
    """Read and validate a competition folder. Without `require_test`, test.csv and lag files are optional; with
    `serving`, they are not read at all and the training files are read tolerantly (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: competition folder not found")
    pairs = _read_pairs(root)
    train = _read_features(root / TRAIN, None, strict=not serving)
    features = [c for c in train.columns if c != "date_id"]
    _check_pair_columns(pairs, features, root / PAIRS)
    labels = _read_labels(root, pairs["target"].to_list(), train["date_id"], serving=serving)
    if serving:
        return Competition(root=root, train=train, labels=labels, pairs=pairs)
    test = _read_test(root, features) if require_test or (root / TEST).exists() else None
    lagged = {
        lag: _read_lag_file(root, lag, pairs)
        for lag in sorted(set(pairs["lag"].to_list()))
        if require_test or (root / lag_file_name(lag)).exists()
    }
    return Competition(root=root, train=train, labels=labels, pairs=pairs, test=test, lagged_labels=lagged)


@dataclass
class LabelCheck:
    """How well train_labels.csv agrees with labels recomputed from train.csv."""

    cells: int
    """Non-null cells of the published labels."""
    matched: int
    """Of those, cells whose recomputed value is within the tolerance."""
    nan_agreement: float
    """Share of all cells where published and recomputed labels are both null or both non-null."""

    @property
    def match_share(self) -> float:
        return self.matched / self.cells if self.cells else 1.0


def check_labels(comp: Competition, tolerance: float = 1e-9) -> LabelCheck:
    """Recompute every label from the prices in train.csv and compare with train_labels.csv."""
    from spread.targets import compute_targets

    published = comp.labels.drop("date_id").to_numpy()
    recomputed = compute_targets(comp.train, comp.pairs).drop("date_id").to_numpy()
    known = ~np.isnan(published)
    close = np.abs(np.nan_to_num(published - recomputed, nan=np.inf)) <= tolerance
    return LabelCheck(
        cells=int(known.sum()),
        matched=int((close & known).sum()),
        nan_agreement=float(np.mean(known == ~np.isnan(recomputed))),
    )
