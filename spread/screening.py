"""Per-fold pre-screening of features on the training slice only, with the reason for every dropped column.

Checks, in order (the first that fails names the reason):
1. mostly missing: more than `max_missing` of the training rows are NaN;
2. constant: a single observed value;
3. near-constant: standard deviation below `min_std`, or one value on at least `max_mode_share` of the observed
   rows (for shares above one half that value is the median, which makes the check one comparison);
4. information coefficient: the mean over targets of |Spearman correlation| between the feature and the target on
   the same row (labels masked where not yet released) is below `min_abs_ic`, or the feature ranks below the best
   `ic_max_features`: ranked by that mean (`ic_rank` "mean"), or (`ic_rank` "per_target") by its best rank among
   the features for any one target, so that the kept set is the union of every target's top k for the largest k
   that fits the cap (a feature that matters for a few targets only survives).
Features whose name matches a pattern of `always_keep` skip check 4 (and the cap): by default the market volatility
features (`spread.features.MARKET_STEM`), which act through interactions, so their own IC is ~0 by design; a
sequence model may also want inputs whose effect is lagged or regime-dependent, which the same-row IC misses
(e.g. every one-day return, `__ret1$`).

Statistics come from `panel.values[rows]` and `targets` only, so data outside the training slice cannot move them.
Columns are processed in chunks to keep temporaries small next to the panel.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spread.errors import ArtifactError, ConfigError, check_choice, check_range
from spread.features import MARKET_STEM, Panel, column_chunks
from spread.scaling import column_quantiles, read_json_artifact

IC_RANKS = ("mean", "per_target")


@dataclass
class ScreenConfig:
    """Thresholds of the per-fold feature screen."""

    max_missing: float = 0.5
    """Drop a feature that is NaN on more than this share of the training rows."""
    min_std: float = 1e-8
    """Drop a feature whose standard deviation over the training rows is below this value."""
    max_mode_share: float = 0.99
    """Drop a feature whose most frequent value covers at least this share of its observed training rows (> 0.5)."""
    min_abs_ic: float = 0.005
    """Drop a feature whose mean |Spearman IC| over targets is below this value (0 disables the IC filter)."""
    ic_max_features: int = 64
    """Keep at most this many features, best mean |IC| first (0: no cap). With ~1300 candidate features and ~1500
    training dates the network overfits the rest: on the synthetic `mitsui` preset (small shape, one fold + the
    holdout) the mean score went 0.98 (no cap) -> 1.03 (200) -> 1.15 (100, 60) -> 1.19 (30), ridge 1.11."""
    ic_rank: str = "mean"
    """Order of the cap: mean (best mean |IC| over targets first) | per_target (best rank for any one target
    first, ties by mean |IC|: the union of every target's top-k features)."""
    always_keep: list[str] = field(default_factory=lambda: [f"^{MARKET_STEM}__"])
    """Regular expressions (`re.search` on the feature name): a matching feature is kept whatever its IC and
    outside the cap (it still passes checks 1-3). Default: the market volatility features (`features.market_vol`)."""

    def __post_init__(self) -> None:
        check_range("screen", "max_missing", self.max_missing, low=0.0, high=1.0)
        check_range("screen", "max_mode_share", self.max_mode_share, low=0.5, high=1.0, low_open=True)
        check_choice("screen", "ic_rank", self.ic_rank, IC_RANKS)
        for name in ("min_std", "min_abs_ic", "ic_max_features"):
            check_range("screen", name, getattr(self, name), low=0)
        for pattern in self.always_keep:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ConfigError(f"screen.always_keep: {pattern!r} is not a regular expression ({exc})") from exc


@dataclass
class ScreenResult:
    """Which features survived the screen of one fold, and why the others did not."""

    keep: list[str]
    """Surviving feature names, in panel order."""
    dropped: dict[str, str]
    """name -> reason, e.g. "constant", "missing 97% > 50%", "ic 0.0010 < 0.005"."""
    scores: dict[str, float] = field(default_factory=dict)
    """name -> mean |Spearman IC| over targets, for every feature that reached the IC check."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScreenResult:
        try:
            return cls(keep=list(data["keep"]), dropped=dict(data["dropped"]), scores=dict(data.get("scores", {})))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"screen result: malformed mapping ({exc!r})") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ScreenResult:
        return read_json_artifact(path, "screen result", cls.from_dict)


def training_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows], as a view (no copy) when the rows are one contiguous ascending range."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return values[rows[0] : rows[-1] + 1]
    return values[rows]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Per column, 1-based ranks of the observed values, ties sharing their mean rank; NaN stays NaN."""
    series = np.ascontiguousarray(values.T)  # one column per row: sorting along contiguous memory is faster
    n_values = series.shape[1]
    order = np.argsort(series, axis=1)  # NaN sort last
    ordered = np.take_along_axis(series, order, axis=1)
    positions = np.broadcast_to(np.arange(n_values), series.shape)
    starts = np.ones(series.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(series.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, positions, n_values - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks_in_order = (first + last) / 2.0 + 1.0
    ranks_in_order[np.isnan(ordered)] = np.nan
    ranks = np.empty_like(ranks_in_order)
    np.put_along_axis(ranks, order, ranks_in_order, axis=1)
    return ranks.T


def centred_ranks(values: np.ndarray) -> np.ndarray:
    """(rows, k) float32, per column: average ranks of the observed values, centred and scaled to unit norm;
    NaN rows become 0.

    The dot product of two such columns is their Spearman correlation when both are fully observed; with missing
    values it is the usual fast approximation of pairwise deletion (missing rows contribute zero).
    """
    ranks = average_ranks(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: their ranks stay zero below
        ranks -= np.nanmean(ranks, axis=0)
    ranks[np.isnan(ranks)] = 0.0
    norms = np.sqrt(np.einsum("ij,ij->j", ranks, ranks))
    np.divide(ranks, norms, out=ranks, where=norms > 0)
    return ranks.astype(np.float32)


def basic_reasons(block: np.ndarray, cfg: ScreenConfig) -> list[str | None]:
    """Missing / constant / near-constant reason for each column of a (rows, k) block, None when it passes."""
    observed = np.count_nonzero(~np.isnan(block), axis=0)
    missing_share = 1.0 - observed / max(len(block), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are reported as missing first
        low, high = np.nanmin(block, axis=0), np.nanmax(block, axis=0)
        std = np.nanstd(block, axis=0, dtype=np.float64)
        (median,) = column_quantiles(block, [0.5])
    mode_share = np.count_nonzero(block == median, axis=0) / np.maximum(observed, 1)
    reasons: list[str | None] = []
    for j in range(block.shape[1]):
        if observed[j] == 0 or missing_share[j] > cfg.max_missing:
            reasons.append(f"missing {missing_share[j]:.0%} > {cfg.max_missing:.0%}")
        elif low[j] == high[j]:
            reasons.append("constant")
        elif std[j] < cfg.min_std:
            reasons.append(f"near-constant: std {std[j]:.3g} < {cfg.min_std:.3g}")
        elif mode_share[j] >= cfg.max_mode_share:
            reasons.append(f"near-constant: one value on {mode_share[j]:.1%} of rows")
        else:
            reasons.append(None)
    return reasons


def abs_ics(values: np.ndarray, columns: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(len(columns), N observed) |Spearman IC| of each column in `columns` with each target ever observed."""
    target_ranks = np.empty(targets.shape, dtype=np.float32)
    for part in column_chunks(targets.shape[1]):
        target_ranks[:, part] = centred_ranks(targets[:, part])
    target_ranks = target_ranks[:, np.any(target_ranks != 0, axis=0)]
    ics = np.zeros((len(columns), target_ranks.shape[1]), dtype=np.float32)
    for part in column_chunks(len(columns)):
        ics[part] = np.abs(centred_ranks(values[:, columns[part]]).T @ target_ranks)  # (chunk, N observed)
    return ics


def best_target_ranks(ics: np.ndarray) -> np.ndarray:
    """(columns,) each column's best (smallest, 0-based) rank by |IC| among the columns for any one target."""
    if ics.shape[1] == 0:
        return np.zeros(len(ics), dtype=np.int64)
    order = np.argsort(-ics, axis=0, kind="stable")  # (columns, N): per target, columns best first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(len(ics))[:, None], axis=0)
    return ranks.min(axis=1)


def screen_features(panel: Panel, rows: np.ndarray, targets: np.ndarray, cfg: ScreenConfig) -> ScreenResult:
    """Screen the panel's columns on the training rows `rows`; `targets` (len(rows), N) are their labels (NaN ok)."""
    values = training_rows(panel.values, np.asarray(rows))
    if len(targets) != len(values):
        raise ConfigError(f"screen: {len(targets)} target rows for {len(values)} training rows")
    dropped: dict[str, str] = {}
    survivors: list[int] = []
    for part in column_chunks(len(panel.names)):
        for column, reason in zip(range(part.start, part.stop), basic_reasons(values[:, part], cfg)):
            if reason is None:
                survivors.append(column)
            else:
                dropped[panel.names[column]] = reason
    scores: dict[str, float] = {}
    patterns = [re.compile(pattern) for pattern in cfg.always_keep]
    exempt = {j for j in survivors if any(p.search(panel.names[j]) for p in patterns)}
    survivors = [j for j in survivors if j not in exempt]
    if cfg.min_abs_ic > 0 or cfg.ic_max_features > 0:
        ics = abs_ics(values, np.array(survivors, dtype=np.int64), targets)
        survivor_scores = ics.mean(axis=1, dtype=np.float64) if ics.shape[1] else np.zeros(len(survivors))
        scores = {panel.names[j]: float(s) for j, s in zip(survivors, survivor_scores)}
        best_ranks = best_target_ranks(ics) if cfg.ic_rank == "per_target" else None
        survivors = ic_filter(survivors, survivor_scores, panel.names, cfg, dropped, best_ranks)
    keep = [panel.names[j] for j in sorted([*survivors, *exempt])]
    return ScreenResult(keep=keep, dropped=dropped, scores=scores)


def ic_filter(
    survivors: list[int], scores: np.ndarray, names: list[str], cfg: ScreenConfig, dropped: dict[str, str],
    best_ranks: np.ndarray | None = None,
) -> list[int]:
    """Apply the IC threshold and cap to `survivors`, recording reasons in `dropped`. The cap keeps the best mean
    |IC| first, or, given `best_ranks` (per survivor, its best rank for any one target), the best of those first."""
    passing = []
    for position, (j, score) in enumerate(zip(survivors, scores)):
        if score < cfg.min_abs_ic:
            dropped[names[j]] = f"ic {score:.4f} < {cfg.min_abs_ic:g}"
        else:
            passing.append((0 if best_ranks is None else int(best_ranks[position]), score, j))
    passing.sort(key=lambda item: (item[0], -item[1], item[2]))
    if cfg.ic_max_features > 0:
        for rank, (_, score, j) in enumerate(passing[cfg.ic_max_features :], start=cfg.ic_max_features + 1):
            dropped[names[j]] = f"ic {score:.4f}: rank {rank} > cap {cfg.ic_max_features}"
        passing = passing[: cfg.ic_max_features]
    return [j for *_, j in passing]
