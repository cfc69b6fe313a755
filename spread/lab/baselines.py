"""Simple baselines on the trainer's folds, metric and run-folder layout, so that their rows compare with it.

A forecasting model is only as good as its margin over simple baselines. Each baseline here sees exactly what the
Transformer sees in a fold (the folds of `spread.splits.make_folds` from the same config, training labels masked
where not released by the fold's cutoff, validation on the same dates and truths) and is scored with the same
`spread.metrics.validation_metrics`. Every prediction is finite (a NaN would silently drop a day from the score).

- `mean_rank`: each target's mean historical daily rank over the fold's training dates (`spread.prior`), the same
  prediction every day. As a submission it scored 0.387 on the competition's final private leaderboard.
- `last_label`: the latest label released by the prediction date (lag-k label of date t - k - 1, the one the
  evaluation API hands out on date t), as a daily rank; targets without one fall back to the mean rank. Positive
  scores mean momentum in the spreads, negative ones reversal.
- `ridge`: ridge regression (Hoerl & Kennard 1970) from the screened, scaled features of the prediction date
  (`spread.windows.prepare_fold`, as for the Transformer) to each target's daily rank centred at 0 (missing labels
  count as the centre). The penalty is chosen per fold from `RIDGE_ALPHAS` on an inner, purged split of the fold's
  own training dates, then refitted on all of them.
- `oracle` (reference, synthetic folders only): the generator's true conditional expectation
  (`oracle_predictions.csv`), the ceiling a model's score is compared with.

`run_baseline` writes a run folder like the trainer's: config.yaml, folds.csv, metrics.csv (one row per fold, the
trainer's `val_*` columns) and summary.json (`spread.runlog.summarize`: per-fold metrics, mean and population std
over folds, and on synthetic data the oracle's score on the same dates and the fraction of it reached).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spread.competition import Competition, load_competition
from spread.config import Config, save_config
from spread.errors import ConfigError, DataError
from spread.features import Panel, released, revealed_label_features
from spread.layout import ORACLE_FILE
from spread.metrics import average_ranks, validation_metrics
from spread.prior import mean_rank_prior
from spread.runfolder import SUMMARY_FILE, write_json
from spread.runlog import RunLog, summarize
from spread.splits import Fold, fold_table, lag_mapping, make_folds
from spread.trainer import load_oracle
from spread.windows import competition_panel, label_matrix, prepare_fold

log = logging.getLogger(__name__)

CONFIG_FILE, FOLDS_FILE = "config.yaml", "folds.csv"
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
"""Ridge penalties tried per fold, in units of the number of training rows (features are standardised)."""
INNER_VAL_SHARE = 0.2
"""Share of a fold's training dates held out (after a purge gap) to choose the ridge penalty."""


@dataclass
class FoldContext:
    """What a baseline may use in one fold, and the validation dates it predicts."""

    comp: Competition
    """The whole competition (features, labels, pairs)."""
    cfg: Config
    """The run's config (features, screening, scaling, windows: the same as the Transformer's)."""
    fold: Fold
    """The split."""
    panel: Panel
    """Feature panel of the whole competition (built once per run)."""
    known: np.ndarray
    """(T, N) labels on panel rows, NaN where missing or (training rows) not released by the fold's cutoff."""
    train_rows: np.ndarray
    """Panel rows of the fold's training dates that have a released label."""
    val_rows: np.ndarray
    """Panel rows of the fold's validation dates that have a label (the dates scored)."""
    oracle: np.ndarray | None = None
    """(T, N) the synthetic generator's true conditional expectations on panel rows; None for other data."""

    @property
    def prior(self) -> np.ndarray:
        """(N,) mean daily rank of each target over the training rows."""
        return mean_rank_prior(self.known[self.train_rows])


def daily_ranks(values: np.ndarray) -> np.ndarray:
    """Per row, average ranks of the finite values scaled to [0, 1] by (rank - 1) / (n - 1) (0.5 when n = 1).

    NaN in the other cells.
    """
    valid = np.isfinite(values)
    ranks = average_ranks(np.where(valid, values, 0.0), valid)
    counts = valid.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(counts > 1, (ranks - 1.0) / (counts - 1.0), 0.5)
    scaled[~valid] = np.nan
    return scaled


def predict_mean_rank(ctx: FoldContext) -> np.ndarray:
    """The training mean rank of each target, every validation day."""
    return np.broadcast_to(ctx.prior, (len(ctx.val_rows), ctx.known.shape[1])).copy()


def predict_last_label(ctx: FoldContext) -> np.ndarray:
    """Daily rank of the latest released label of each target; the mean rank where none is released yet."""
    revealed = revealed_label_features(ctx.comp.labels, ctx.panel.date_ids, ctx.comp.target_lags)[ctx.val_rows]
    ranks = daily_ranks(revealed.astype(np.float64))
    return np.where(np.isnan(ranks), ctx.prior[None, :], ranks)


def _centred_rank_targets(labels: np.ndarray) -> np.ndarray:
    """Daily ranks centred at 0 ([-0.5, 0.5]); missing labels are the centre."""
    return np.nan_to_num(daily_ranks(labels) - 0.5, nan=0.0)


def _ridge_solutions(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights (F, N), intercept (N,)) for each penalty alpha * n_rows: one linear solve each."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    gram, moment = xc.T @ xc, xc.T @ (y - y_mean)
    solutions = []
    for alpha in alphas:
        penalised = gram + np.eye(len(gram)) * (alpha * len(x))
        weights = np.linalg.solve(penalised, moment)
        solutions.append((weights, y_mean - x_mean @ weights))
    return solutions


def _choose_alpha(x: np.ndarray, labels: np.ndarray, lags: np.ndarray, purge: int) -> float:
    """The penalty of `RIDGE_ALPHAS` with the best score on the last `INNER_VAL_SHARE` of the rows, after a purge."""
    n_val = max(1, int(len(x) * INNER_VAL_SHARE))
    n_fit = len(x) - n_val - purge
    if n_fit < 2:
        return RIDGE_ALPHAS[len(RIDGE_ALPHAS) // 2]
    solutions = _ridge_solutions(x[:n_fit], _centred_rank_targets(labels[:n_fit]), RIDGE_ALPHAS)
    truth = labels[-n_val:]
    scores = []
    for weights, intercept in solutions:
        score = validation_metrics(truth, x[-n_val:] @ weights + intercept, lags)["score"]
        scores.append(score if np.isfinite(score) else -np.inf)
    if not np.isfinite(max(scores)):
        return RIDGE_ALPHAS[len(RIDGE_ALPHAS) // 2]
    best = RIDGE_ALPHAS[int(np.argmax(scores))]
    log.info("ridge: inner-validation scores %s -> alpha %g", [round(s, 4) for s in scores], best)
    return best


def predict_ridge(ctx: FoldContext) -> np.ndarray:
    """Ridge from the screened, scaled features of each date to the targets' centred daily ranks."""
    cfg = ctx.cfg
    data = prepare_fold(ctx.comp, ctx.fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
    features = data.train.source.body.astype(np.float64)  # (T, F) scaled, missing = 0 (the centre)
    if features.shape[1] == 0:
        raise DataError(f"{ctx.fold.name}: the feature screen kept no feature for ridge")
    x, labels = features[ctx.train_rows], ctx.known[ctx.train_rows]
    alpha = _choose_alpha(x, labels, ctx.comp.target_lags, purge=int(ctx.comp.target_lags.max()) + 1)
    ((weights, intercept),) = _ridge_solutions(x, _centred_rank_targets(labels), (alpha,))
    return features[ctx.val_rows] @ weights + intercept


def predict_oracle(ctx: FoldContext) -> np.ndarray:
    """The synthetic generator's true conditional expectations (needs oracle_predictions.csv in the folder)."""
    if ctx.oracle is None:
        raise DataError(
            f"{ctx.comp.root / ORACLE_FILE}: not found; the oracle exists only for synthetic folders "
            "(python -m spread synth)"
        )
    return np.nan_to_num(ctx.oracle[ctx.val_rows], nan=0.0)


BASELINES: dict[str, Callable[[FoldContext], np.ndarray]] = {
    "mean_rank": predict_mean_rank,
    "last_label": predict_last_label,
    "ridge": predict_ridge,
}
"""name -> predictor: (fold context) -> (validation days, targets) finite predictions."""
REFERENCES: dict[str, Callable[[FoldContext], np.ndarray]] = {"oracle": predict_oracle}
"""Reference predictors that are not baselines (they use knowledge no model has)."""


def competition_folds(comp: Competition, cfg: Config) -> list[Fold]:
    """The trainer's folds: walk-forward then the holdout on the test's scored dates."""
    return make_folds(
        comp.labels["date_id"].to_numpy(), comp.target_lags, cfg.split, scored_dates=comp.scored_dates or None,
        train_end=cfg.data.train_end,
    )


def fold_context(
    comp: Competition, cfg: Config, fold: Fold, panel: Panel, labels: np.ndarray, oracle: np.ndarray | None = None
) -> FoldContext:
    """Mask the training labels not released by the fold's cutoff and list the training and validation rows."""
    known = labels.copy()
    train_rows = panel.rows_between(*fold.train_dates)
    dates = panel.date_ids[train_rows]
    known[train_rows] = np.where(released(dates, comp.target_lags, fold.train_cutoff), known[train_rows], np.nan)
    train_rows = train_rows[np.isfinite(known[train_rows]).any(axis=1)]
    val_rows = panel.rows_between(*fold.val_dates)
    val_rows = val_rows[np.isfinite(labels[val_rows]).any(axis=1)]
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{fold.name}: no labelled training or validation date")
    return FoldContext(comp, cfg, fold, panel, known, train_rows, val_rows, oracle)


def evaluate(predict: Callable[[FoldContext], np.ndarray], ctx: FoldContext) -> dict:
    """One predictor on one fold: its validation metrics, the oracle's score on the same dates, the seconds taken."""
    start = time.perf_counter()
    pred = predict(ctx)
    seconds = time.perf_counter() - start
    truth = ctx.known[ctx.val_rows]
    if pred.shape != truth.shape or not np.isfinite(pred).all():
        raise DataError(f"{ctx.fold.name}: predictions must be finite with shape {truth.shape}, got {pred.shape}")
    oracle_score = float("nan")
    if ctx.oracle is not None:
        oracle_score = validation_metrics(truth, predict_oracle(ctx), ctx.comp.target_lags)["score"]
    metrics = validation_metrics(truth, pred, ctx.comp.target_lags)
    return {"metrics": metrics, "best_epoch": 0, "oracle_score": oracle_score, "seconds": round(seconds, 3)}


def run_baseline(name: str, cfg: Config, data_dir: str | Path, out_dir: str | Path) -> dict:
    """Score baseline `name` on every fold of `cfg` over the competition in `data_dir`; write a run folder.

    Returns the summary, keyed like the trainer's: {"folds": {fold: {"metrics": {...}, "oracle_score", ...}},
    "mean": {...}, "std": {...}, "oracle_fraction" (synthetic data), "baseline": name, "run": {...}}.
    """
    predictors = {**BASELINES, **REFERENCES}
    if name not in predictors:
        raise ConfigError(f"baseline: unknown name {name!r}; choose one of {sorted(predictors)}")
    started = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: run folder exists and is not empty")
    comp = load_competition(data_dir, require_test=False)
    folds = competition_folds(comp, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)
    panel = competition_panel(comp, cfg.features)
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names).astype(np.float64)
    oracle = load_oracle(Path(data_dir), comp)
    runlog = RunLog(out)
    results = {}
    for fold in folds:
        result = evaluate(predictors[name], fold_context(comp, cfg, fold, panel, labels, oracle))
        log.info("%s %s: score %.4f", name, fold.name, result["metrics"]["score"])
        runlog.log_epoch(fold.name, {"fold": fold.name, "epoch": 0, "seconds": result["seconds"],
                                     **{f"val_{key}": value for key, value in result["metrics"].items()}})
        results[fold.name] = result
    runlog.close()
    fold_table(folds, lag_mapping(comp.pairs)).write_csv(out / FOLDS_FILE)
    summary = summarize(results)
    oracle_scores = [r["oracle_score"] for r in results.values() if np.isfinite(r["oracle_score"])]
    if oracle_scores:
        summary["mean"]["oracle_score"] = float(np.mean(oracle_scores))
        summary["oracle_fraction"] = summary["mean"].get("score", float("nan")) / summary["mean"]["oracle_score"]
    summary["baseline"] = name
    summary["run"] = {"device": "cpu", "precision": "fp64", "seconds": round(time.perf_counter() - started, 2)}
    write_json(out / SUMMARY_FILE, summary)
    return summary
