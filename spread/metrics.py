"""The competition score and the validation metrics logged every epoch, vectorised over days.

Competition score (shared COMPETITION.md, "Metric"; the organisers' `rank_correlation_sharpe_ratio`): for each
scored date d, S_d = targets whose truth is non-null; rho_d = Pearson correlation of the average-method ranks of
the predictions and of the truths over S_d; score = mean(rho_d) / std(rho_d) with ddof 0. Like the official scorer
this module raises when S_d is empty, when the truths or the predictions are constant over S_d (the official
check is a zero population std of the non-NaN values, so a single-target day raises too), and when std(rho) is 0.
A NaN prediction inside S_d makes rho_d NaN and the day silently drops out of the mean and std, exactly as in the
official scorer; `daily_rank_correlations` returns those NaN days so that callers can count them and warn, and
`rank_correlation_sharpe` logs a warning naming them.

Ranks are computed for all days at once: one row-wise argsort with the excluded cells keyed last, then tie groups
found on the sorted rows; no python loop runs per day. "Constant" means all (non-NaN) values are exactly equal;
pandas' std can leave a rounding residue on some equal values, where the official scorer yields a NaN day instead
of raising: this module always raises there.

Validation metrics (ROADMAP "Losses & Metrics"): Spearman IC mean and ICIR per target group (a group is a lag;
horizon == lag in this competition), top-k precision, the Q1-Q5 spread of truths between the predicted top and
bottom quintiles, and sparsity statistics of the feature gate. These are lenient: a day that cannot be scored is
skipped instead of raising, so that a training run never dies in its validation step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from spread.errors import DataError, SpreadError

log = logging.getLogger(__name__)

DATE_COLUMN = "date_id"
GATE_THRESHOLDS = (0.01, 0.05, 0.1, 0.5)
TOP_K_SHARE = 0.1
N_QUANTILES = 5


class MetricError(SpreadError):
    """A score cannot be computed (the official scorer would raise), or its inputs do not line up."""


# ----------------------------------------------------------------------------------------------------------------
# ranks and daily rank correlations


def _as_matrices(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != pred.shape:
        raise MetricError(
            f"truth and predictions must be 2-D arrays (days, targets) of the same shape, got {truth.shape} "
            f"and {pred.shape}"
        )
    return truth, pred


def _date_labels(date_ids: np.ndarray | None, n_days: int) -> np.ndarray:
    if date_ids is None:
        return np.arange(n_days)
    labels = np.asarray(date_ids)
    if labels.shape != (n_days,):
        raise MetricError(f"date_ids has shape {labels.shape}, expected ({n_days},) (one per day)")
    return labels


def _sorted_rows(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise ascending order of the cells with the invalid ones last, and the sorted values (invalid as +inf).

    The excluded cells are keyed +inf for numpy's fast (SIMD) unstable sort; if a valid cell itself holds +inf it
    could then trade places with an excluded one, so such input takes the slower stable path with NaN keys, which
    numpy always sorts last.
    """
    if (np.isposinf(values) & valid).any():
        keyed = np.where(valid, values, np.nan)
        order = np.argsort(keyed, axis=1, kind="stable")
        return order, np.take_along_axis(keyed, order, axis=1)
    keyed = np.where(valid, values, np.inf)
    return np.argsort(keyed, axis=1), np.sort(keyed, axis=1)


def _scatter_rows(order: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Inverse of a row-wise `take_along_axis(., order)`: put sorted_values[d, i] back at column order[d, i]."""
    out = np.empty(sorted_values.shape, dtype=sorted_values.dtype)
    np.put_along_axis(out, order, sorted_values, axis=1)
    return out


def average_ranks(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based average-method ranks of `values` among the `valid` cells of each row; NaN in the other cells.

    Equal values share the mean of the ranks they span (pandas `rank(method="average")`, scipy `rankdata`): on
    each sorted row, a tie group spanning positions first..last gets rank (first + last) / 2 + 1.
    """
    order, ordered = _sorted_rows(values, valid)
    positions = np.arange(values.shape[1])
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, positions, positions.size)[:, ::-1], axis=1)[:, ::-1]
    ranks = _scatter_rows(order, (first + last) / 2.0 + 1.0)
    ranks[~valid] = np.nan
    return ranks


def _constant_over(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per row: the non-NaN values among `cells` have population std 0 (at least one value, all equal, finite).

    Mirrors the official check `row[cols].std(ddof=0) == 0` (pandas skips NaN; an infinite value gives a NaN
    std, which is not 0).
    """
    present = cells & ~np.isnan(values)
    low = np.where(present, values, np.inf).min(axis=1)
    high = np.where(present, values, -np.inf).max(axis=1)
    return present.any(axis=1) & (low == high) & np.isfinite(low)


def _pearson_of_ranks(truth_ranks: np.ndarray, pred_ranks: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two rank arrays over the `counts[d]` ranked cells (zeros elsewhere).

    Both sides hold the ranks 1..n (ties averaged), so both means are (n + 1) / 2; ranks are multiples of 1/2, so
    the sums below are exact in float64 and so are the covariance and variances.
    """
    squared_mean_total = counts * ((counts + 1) / 2.0) ** 2
    covariance = np.einsum("ij,ij->i", truth_ranks, pred_ranks) - squared_mean_total
    truth_variance = np.einsum("ij,ij->i", truth_ranks, truth_ranks) - squared_mean_total
    pred_variance = np.einsum("ij,ij->i", pred_ranks, pred_ranks) - squared_mean_total
    with np.errstate(invalid="ignore", divide="ignore"):  # days whose prediction ranks are partial become NaN
        scale = np.sqrt(truth_variance * pred_variance)
        rho = np.where(scale > 0, covariance / scale, np.nan)
    return np.clip(rho, -1.0, 1.0)


def _daily_rho_and_problems(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rho per day (NaN where the day cannot be scored) plus the masks of empty days and of constant days."""
    scored = ~np.isnan(truth)
    predicted = scored & ~np.isnan(pred)
    empty = ~scored.any(axis=1)
    constant = ~empty & (_constant_over(truth, scored) | _constant_over(pred, scored))
    truth_ranks = np.nan_to_num(average_ranks(truth, scored), nan=0.0)
    pred_ranks = np.nan_to_num(average_ranks(pred, predicted), nan=0.0)
    rho = _pearson_of_ranks(truth_ranks, pred_ranks, scored.sum(axis=1))
    nan_prediction = (predicted != scored).any(axis=1)  # a NaN prediction in S_d makes the whole day NaN
    rho[empty | constant | nan_prediction] = np.nan
    return rho, empty, constant


def daily_rank_rho(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Spearman correlation of each day (row) over its non-null truths, shape (days,); NaN where the official scorer
    could not score the day (no non-null truth, constant truths or predictions there, a NaN prediction). The
    non-raising form of `daily_rank_correlations`."""
    return _daily_rho_and_problems(*_as_matrices(truth, pred))[0]


def daily_rank_correlations(truth: np.ndarray, pred: np.ndarray, date_ids: np.ndarray | None = None) -> np.ndarray:
    """Spearman correlation of each day (row) over its non-null truths, shape (days,).

    A day with a NaN prediction among its non-null truths gets NaN (the official scorer drops it silently;
    `np.isnan` of the result is the flag to warn on). Raises MetricError, naming the first failing date_id, when a
    day has no non-null truth or its truths or predictions are constant there.
    """
    truth, pred = _as_matrices(truth, pred)
    labels = _date_labels(date_ids, truth.shape[0])
    rho, empty, constant = _daily_rho_and_problems(truth, pred)
    failing = np.flatnonzero(empty | constant)
    if failing.size:
        day = int(failing[0])
        if empty[day]:
            raise MetricError(f"date_id {labels[day]}: no non-null target values (nothing to score)")
        n_scored = int((~np.isnan(truth[day])).sum())
        raise MetricError(
            f"date_id {labels[day]}: truths or predictions are constant over the {n_scored} non-null target(s), "
            "rank correlation undefined"
        )
    return rho


def _sharpe(rho: np.ndarray) -> tuple[float, float, float]:
    """(mean, population std, mean / std) of the non-NaN values; NaN entries where undefined."""
    finite = rho[~np.isnan(rho)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean, std = float(finite.mean()), float(finite.std())
    return mean, std, (mean / std if std > 0 else float("nan"))


def rank_correlation_sharpe(truth: np.ndarray, pred: np.ndarray, date_ids: np.ndarray | None = None) -> float:
    """The competition score: mean / population std of the daily rank correlations.

    Days with a NaN prediction drop out (logged as a warning); NaN when every day dropped out, as officially.
    Raises MetricError for a day that cannot be scored (see `daily_rank_correlations`) and when std(rho) is 0.
    """
    truth, pred = _as_matrices(truth, pred)
    if truth.shape[0] == 0:
        raise MetricError("no dates to score")
    labels = _date_labels(date_ids, truth.shape[0])
    rho = daily_rank_correlations(truth, pred, labels)
    dropped = labels[np.isnan(rho)]
    if dropped.size:
        log.warning(
            "%d of %d day(s) dropped from the score because of NaN predictions, date_id(s): %s",
            dropped.size, rho.size, dropped[:20].tolist(),
        )
    _, std, score = _sharpe(rho)
    if std == 0:
        kept = labels[~np.isnan(rho)]
        raise MetricError(
            f"std of the daily rank correlations is 0 over {kept.size} day(s) (date_id {kept[0]}..{kept[-1]}), "
            "Sharpe ratio undefined"
        )
    return score


# ----------------------------------------------------------------------------------------------------------------
# validation metrics (lenient)


def ic_by_group(truth: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[int, tuple[float, float]]:
    """group -> (mean daily Spearman IC, ICIR = mean / population std) over the targets (columns) of each group.

    Lenient: days that the official rules would reject (no truth, constant values) or that have NaN predictions are
    skipped; NaN where no day is left (mean and ICIR) or the std is 0 (ICIR).
    """
    truth, pred = _as_matrices(truth, pred)
    groups = np.asarray(groups)
    if groups.shape != (truth.shape[1],):
        raise MetricError(f"groups has shape {groups.shape}, expected ({truth.shape[1]},) (one per target)")
    result = {}
    for group in np.unique(groups):
        columns = groups == group
        rho, _, _ = _daily_rho_and_problems(truth[:, columns], pred[:, columns])
        mean, _, ratio = _sharpe(rho)
        result[int(group)] = (mean, ratio)
    return result


def _ordinal_positions(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0-based ascending position of each valid cell within its row (ties broken by column order)."""
    order = np.argsort(np.where(valid, values, np.nan), axis=1, kind="stable")  # NaN sorts last
    positions = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    return _scatter_rows(order, np.ascontiguousarray(positions))


def _tails(values: np.ndarray, valid: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the `sizes[d]` largest and smallest valid cells of each row d."""
    ascending = _ordinal_positions(values, valid)
    descending = valid.sum(axis=1, keepdims=True) - 1 - ascending
    size = sizes[:, None]
    return valid & (descending < size), valid & (ascending < size)


def top_k_precision(truth: np.ndarray, pred: np.ndarray, k: int | None = None) -> float:
    """Share of the predicted top-k and bottom-k targets of a day that are truly top/bottom-k, averaged over days.

    The cross-section of a day is the targets with a non-null truth and a non-NaN prediction. `k` defaults to 10%
    of each day's cross-section (at least 1) and is capped at half of it; days with fewer than 2 targets are
    skipped. NaN when no day is left.
    """
    truth, pred = _as_matrices(truth, pred)
    if k is not None and k < 1:
        raise MetricError(f"top-k precision needs k >= 1, got {k}")
    valid = ~np.isnan(truth) & ~np.isnan(pred)
    counts = valid.sum(axis=1)
    wanted = np.maximum(1, (TOP_K_SHARE * counts).astype(np.int64)) if k is None else np.full_like(counts, k)
    sizes = np.minimum(wanted, counts // 2)
    true_top, true_bottom = _tails(truth, valid, sizes)
    pred_top, pred_bottom = _tails(pred, valid, sizes)
    hits = (true_top & pred_top).sum(axis=1) + (true_bottom & pred_bottom).sum(axis=1)
    days = sizes > 0
    if not days.any():
        return float("nan")
    return float((hits[days] / (2 * sizes[days])).mean())


def quintile_spread(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean truth of the top predicted quintile minus that of the bottom predicted quintile, averaged over days.

    A quintile holds floor(n/5) of the day's n targets with a non-null truth and a non-NaN prediction; days with
    fewer than 5 such targets are skipped. NaN when no day is left.
    """
    truth, pred = _as_matrices(truth, pred)
    valid = ~np.isnan(truth) & ~np.isnan(pred)
    sizes = valid.sum(axis=1) // N_QUANTILES
    top, bottom = _tails(pred, valid, sizes)
    days = sizes > 0
    if not days.any():
        return float("nan")
    top_sum = np.where(top, truth, 0.0).sum(axis=1)
    bottom_sum = np.where(bottom, truth, 0.0).sum(axis=1)
    spread = (top_sum - bottom_sum)[days] / sizes[days]
    return float(spread.mean())


def gate_sparsity(gate: np.ndarray, thresholds: Sequence[float] = GATE_THRESHOLDS) -> dict[str, float]:
    """Share of gate values below each threshold, their L1 norm and mean: keys "gate_below_0.01", "gate_l1", ..."""
    values = np.asarray(gate, dtype=np.float64).ravel()
    if values.size == 0:
        raise MetricError("gate sparsity of an empty gate array is undefined")
    stats = {f"gate_below_{threshold:g}": float((values < threshold).mean()) for threshold in thresholds}
    stats["gate_l1"] = float(np.abs(values).sum())
    stats["gate_mean"] = float(values.mean())
    return stats


def validation_metrics(
    truth: np.ndarray, pred: np.ndarray, target_lags: np.ndarray, gate: np.ndarray | None = None
) -> dict[str, float]:
    """Everything the trainer logs after an epoch, as one flat dict of floats.

    Keys: "score" (competition score, NaN where the official scorer would raise), "ic_mean" and "icir" (all
    targets, unscorable days skipped), "nan_pred_days" (days dropped for NaN predictions), "ic_lag{L}" and
    "icir_lag{L}" per lag, "topk_precision", "q1_q5_spread", and the `gate_sparsity` keys when a gate is given.
    """
    truth, pred = _as_matrices(truth, pred)
    rho, empty, constant = _daily_rho_and_problems(truth, pred)
    ic_mean, ic_std, icir = _sharpe(rho)
    unscorable = truth.shape[0] == 0 or bool((empty | constant).any()) or not ic_std > 0
    metrics = {
        "score": float("nan") if unscorable else icir,
        "ic_mean": ic_mean,
        "icir": icir,
        "nan_pred_days": float((np.isnan(rho) & ~empty & ~constant).sum()),
    }
    for lag, (lag_mean, lag_icir) in ic_by_group(truth, pred, target_lags).items():
        metrics[f"ic_lag{lag}"] = lag_mean
        metrics[f"icir_lag{lag}"] = lag_icir
    metrics["topk_precision"] = top_k_precision(truth, pred)
    metrics["q1_q5_spread"] = quintile_spread(truth, pred)
    if gate is not None:
        metrics.update(gate_sparsity(gate))
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# scoring tables


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a .csv or .parquet file; DataError naming the file when it is missing, of another kind or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=None)
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for malformed files
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc
    raise DataError(f"{path}: unknown table format {suffix!r} (expected .csv or .parquet)")


def _date_ids(frame: pl.DataFrame, name: str) -> np.ndarray:
    if DATE_COLUMN not in frame.columns:
        raise MetricError(f"{name}: missing column {DATE_COLUMN!r}")
    dates = frame[DATE_COLUMN].cast(pl.Int64, strict=False)
    if dates.null_count():
        row = int(dates.is_null().arg_true()[0])
        raise MetricError(f"{name}: column {DATE_COLUMN!r}, row {row}: {frame[DATE_COLUMN][row]!r} is not a date_id")
    values = dates.to_numpy()
    unique, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise MetricError(f"{name}: duplicate date_id {unique[counts > 1][0]}")
    return values


def _rows_of(frame_dates: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Row index in the frame of each of `dates` (all present, frame dates unique)."""
    order = np.argsort(frame_dates)
    return order[np.searchsorted(frame_dates, dates, sorter=order)]


def _float_matrix(frame: pl.DataFrame, columns: list[str], rows: np.ndarray, name: str) -> np.ndarray:
    """The chosen rows x columns as float64, nulls as NaN; MetricError naming a column with non-numeric text."""
    casts = []
    for column in columns:
        values = frame[column].cast(pl.Float64, strict=False)
        lost = values.is_null() & frame[column].is_not_null()
        if lost.any():
            row = int(lost.arg_true()[0])
            raise MetricError(f"{name}: column {column!r}, row {row}: {frame[column][row]!r} is not a number")
        casts.append(values.fill_null(float("nan")).to_numpy()[rows])
    return np.stack(casts, axis=1) if casts else np.empty((rows.size, 0))


def score_frames(
    solution: pl.DataFrame, submission: pl.DataFrame, scored_dates: Sequence[int] | None = None
) -> float:
    """Competition score of `submission` against `solution`, both `date_id` + target columns, aligned by date_id.

    The targets are the solution's columns other than date_id; the submission must have all of them (extra
    submission columns are ignored). The dates scored are those in both frames, restricted to `scored_dates`
    when given (scored dates missing from either frame are logged).
    """
    solution_dates = _date_ids(solution, "solution")
    submission_dates = _date_ids(submission, "submission")
    targets = [column for column in solution.columns if column != DATE_COLUMN]
    missing = [column for column in targets if column not in submission.columns]
    if missing:
        raise MetricError(f"submission: missing {len(missing)} target column(s): {missing[:20]}")
    dates = np.intersect1d(solution_dates, submission_dates)
    if scored_dates is not None:
        wanted = np.unique(np.asarray(scored_dates, dtype=np.int64))
        absent = np.setdiff1d(wanted, dates)
        if absent.size:
            log.warning(
                "%d scored date_id(s) not in both solution and submission: %s", absent.size, absent[:20].tolist()
            )
        dates = np.intersect1d(dates, wanted)
    if dates.size == 0:
        raise MetricError("solution and submission have no date_id in common to score")
    truth = _float_matrix(solution, targets, _rows_of(solution_dates, dates), "solution")
    pred = _float_matrix(submission, targets, _rows_of(submission_dates, dates), "submission")
    return rank_correlation_sharpe(truth, pred, dates)
