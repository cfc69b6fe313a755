"""Walk-forward folds and a competition-like holdout, purged with the label release rule.

A lag-k label of date d is ln P(d + k + 1) / P(d + 1): it depends on prices up to d + k + 1 and is released on
that date (`spread.targets.release_date`). A fold whose validation starts at v0 is fitted with what is known at
its cutoff c = v0 - 1 - embargo_extra (never after `train_end`): the training label dates end at
c - max_lag - 1, the last date whose labels are all released by c. Hence

    embargo = v0 - train_dates[1] - 1 = max_lag + 1 + embargo_extra   (dates strictly between, >= max_lag + 1)

and no training label depends on a price dated v0 or later.

The holdout mirrors the competition's public leaderboard: validate on the test's scored dates (1827..1916 on the
real data, trained on labels released by 1826); without scored dates it is the `val_size` dates right after
`train_end`, or the last `val_size` dates whose labels are complete. Walk-forward folds use only what is known at
the holdout's cutoff (their validation labels are released by then), oldest first, `step` dates apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from spread.errors import ConfigError, DataError, check_choice, check_range
from spread.targets import release_date

SCHEMES = ("expanding", "sliding")
HOLDOUT = "holdout"
"""The name of the competition-like holdout fold."""


@dataclass
class SplitConfig:
    """Walk-forward validation folds and the holdout."""

    scheme: str = "expanding"
    """"expanding": training starts at the first date; "sliding": the last `train_size` label dates only."""
    n_folds: int = 3
    """Number of walk-forward folds before the holdout (0: holdout only)."""
    val_size: int = 90
    """Validation dates per walk-forward fold (and of the holdout when there are no scored dates)."""
    step: int = 90
    """Dates between the validation starts of consecutive walk-forward folds."""
    embargo: int = 0
    """Extra dates left out between training and validation, beyond the minimum max_lag + 1."""
    min_train: int = 100
    """Fewest training label dates a fold may have (ConfigError otherwise)."""
    train_size: int = 750
    """Training label dates per fold of the sliding scheme (ignored by "expanding")."""
    holdout: bool = True
    """Add the competition-like holdout fold (named "holdout") after the walk-forward folds."""

    def __post_init__(self) -> None:
        check_choice("split", "scheme", self.scheme, SCHEMES)
        for name in ("val_size", "step", "min_train", "train_size"):
            check_range("split", name, getattr(self, name), low=1)
        for name in ("n_folds", "embargo"):
            check_range("split", name, getattr(self, name), low=0)
        if self.n_folds == 0 and not self.holdout:
            raise ConfigError("split: n_folds = 0 and holdout = false leave no fold")


@dataclass
class Fold:
    """One training / validation split, in label dates."""

    name: str
    """"fold0", "fold1", ... (oldest first) or "holdout"."""
    train_dates: tuple[int, int]
    """First and last label date usable for training (inclusive), purged by the release rule."""
    val_dates: tuple[int, int]
    """First and last validation label date (inclusive)."""
    embargo: int
    """Dates strictly between train_dates[1] and val_dates[0] (>= max lag + 1)."""
    cutoff: int | None = None
    """Last date whose raw rows and released labels training may use (None: val_dates[0] - 1)."""

    @property
    def train_cutoff(self) -> int:
        return self.val_dates[0] - 1 if self.cutoff is None else self.cutoff

    def record(self) -> dict:
        """The fold as plain values (a checkpoint's "fold")."""
        return {"name": self.name, "train_dates": list(self.train_dates), "val_dates": list(self.val_dates),
                "embargo": self.embargo, "cutoff": self.train_cutoff}


def purged_fold(
    name: str, val_dates: tuple[int, int], cutoff: int, max_lag: int, first_date: int, cfg: SplitConfig
) -> Fold:
    """The fold validating on `val_dates` whose training labels are all released by `cutoff`."""
    train_last = cutoff - max_lag - 1
    train_first = first_date if cfg.scheme == "expanding" else max(first_date, train_last - cfg.train_size + 1)
    n_train = train_last - train_first + 1
    if n_train < cfg.min_train:
        raise ConfigError(
            f"split: {name} validating on {val_dates[0]}..{val_dates[1]} has {max(n_train, 0)} training dates "
            f"< split.min_train = {cfg.min_train}; use fewer folds, a smaller step/val_size or min_train"
        )
    embargo = val_dates[0] - train_last - 1
    return Fold(name, (int(train_first), int(train_last)), (int(val_dates[0]), int(val_dates[1])), int(embargo),
                int(cutoff))


def holdout_dates(
    first: int, last: int, max_lag: int, cfg: SplitConfig, scored_dates: Sequence[int] | None, train_end: int | None
) -> tuple[int, int]:
    """Validation dates of the holdout: the scored dates, else right after train_end, else the last complete."""
    last_complete = last - max_lag - 1
    if scored_dates is not None and len(scored_dates):
        start, stop = int(min(scored_dates)), int(max(scored_dates))
    elif train_end is not None:
        start = train_end + 1 + cfg.embargo
        stop = min(start + cfg.val_size - 1, last_complete)
    else:
        stop = last_complete
        start = stop - cfg.val_size + 1
    if not first < start <= stop <= last:
        raise DataError(f"split: holdout dates {start}..{stop} do not fit in the labelled dates {first}..{last}")
    return start, stop


def make_folds(
    date_ids: np.ndarray,
    target_lags: np.ndarray,
    cfg: SplitConfig,
    scored_dates: Sequence[int] | None = None,
    train_end: int | None = None,
) -> list[Fold]:
    """Walk-forward folds (oldest first) then the holdout, for the consecutive `date_ids` of the label panel.

    `scored_dates`: the test's scored date_ids (the holdout's validation range); `train_end`: last date whose data
    any fold's training may use.
    """
    date_ids = np.asarray(date_ids)
    if len(date_ids) == 0 or np.any(np.diff(date_ids) != 1):
        raise DataError("split: date_ids must be non-empty consecutive integers")
    first, last = int(date_ids[0]), int(date_ids[-1])
    max_lag = int(np.max(target_lags))
    limit = last if train_end is None else min(int(train_end), last)
    holdout = []
    if cfg.holdout:
        val_dates = holdout_dates(first, last, max_lag, cfg, scored_dates, train_end)
        cutoff = min(val_dates[0] - 1 - cfg.embargo, limit)
        holdout.append(purged_fold(HOLDOUT, val_dates, cutoff, max_lag, first, cfg))
        limit = cutoff
    last_val = limit - max_lag - 1  # walk-forward validation labels must be released by `limit`
    walk_forward = []
    for i in range(cfg.n_folds):
        stop = last_val - (cfg.n_folds - 1 - i) * cfg.step
        start = stop - cfg.val_size + 1
        walk_forward.append(purged_fold(f"fold{i}", (start, stop), start - 1 - cfg.embargo, max_lag, first, cfg))
    return walk_forward + holdout


def format_fold_table(table: pl.DataFrame) -> str:
    """The fold table (`fold_table`) as compact text for the log: one line per fold, date ranges as first..last;
    the feature count only once it is known."""
    with_features = table["n_features"].null_count() < table.height
    lines = [f"{'fold':<10} {'train dates':>12} {'n':>5} {'cutoff':>6} {'embargo':>16} {'val dates':>12} {'n':>4}"
             + (f" {'features':>8}" if with_features else "")]
    for row in table.iter_rows(named=True):
        embargo = f"{row['embargo']} = {row['embargo_release']} + {row['embargo_extra']}"
        train, val = f"{row['train_start']}..{row['train_end']}", f"{row['val_start']}..{row['val_end']}"
        lines.append(f"{row['fold']:<10} {train:>12} {row['n_train']:>5} {row['cutoff']:>6} {embargo:>16} {val:>12} "
                     f"{row['n_val']:>4}" + (f" {row['n_features']:>8}" if with_features else ""))
    lines.append("embargo = release rule (max lag + 1) + extra (split.embargo, more when data.train_end cuts earlier)")
    return "\n".join(lines)


def lag_mapping(pairs: pl.DataFrame) -> dict[int, list[str]]:
    """lag -> target names with that lag, in target order."""
    mapping: dict[int, list[str]] = {}
    for target, lag in zip(pairs["target"].to_list(), pairs["lag"].to_list()):
        mapping.setdefault(int(lag), []).append(target)
    return dict(sorted(mapping.items()))


def fold_table(
    folds: Sequence[Fold], lags_mapping: Mapping[int, Sequence[str]], n_features: Mapping[str, int] | None = None
) -> pl.DataFrame:
    """One row per fold: date ranges, sizes, embargo, cutoff, per lag the release date of the last training label
    and the number of targets, and the feature count after screening (null when unknown). Saved as folds.csv.

    The embargo (dates strictly between the last training label date and the first validation date) is the sum of
    `embargo_release`, the max lag + 1 dates the label release rule keeps out (a label of date d, lag k depends on
    prices up to d + k + 1), and `embargo_extra`, the dates between the training cutoff and the validation start:
    split.embargo, or more when data.train_end ends the training earlier (the holdout)."""
    rows = []
    for fold in folds:
        row = {
            "fold": fold.name,
            "train_start": fold.train_dates[0],
            "train_end": fold.train_dates[1],
            "n_train": fold.train_dates[1] - fold.train_dates[0] + 1,
            "cutoff": fold.train_cutoff,
            "embargo": fold.embargo,
            "embargo_release": fold.train_cutoff - fold.train_dates[1],
            "embargo_extra": fold.val_dates[0] - 1 - fold.train_cutoff,
            "val_start": fold.val_dates[0],
            "val_end": fold.val_dates[1],
            "n_val": fold.val_dates[1] - fold.val_dates[0] + 1,
        }
        for lag, targets in lags_mapping.items():
            row[f"lag{lag}_targets"] = len(targets)
            row[f"lag{lag}_last_release"] = int(release_date(fold.train_dates[1], lag))
        row["n_features"] = None if n_features is None else n_features.get(fold.name)
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"n_features": pl.Int64})
