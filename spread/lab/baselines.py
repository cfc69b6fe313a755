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
  own training dates (the last `INNER_VAL_SHARE`, after max lag + 1 dates), then refitted on all of them; every
  peer below chooses its hyper-parameters the same way, on training dates only.
- `reduced_rank`: reduced-rank ridge regression (Izenman 1975) of all targets' centred daily ranks on the same
  screened features: a strong linear model that pools across targets, so that beating it means a model learned
  something no linear map of the current features holds. Penalty and rank are chosen on the inner split.
- `regularised_prior`: each target's mean daily rank with a recency half-life and a count-based shrink to the
  middle rank (a regularised constant scored 0.479 on the real final leaderboard, 10th); both chosen on the inner
  split, scoring the constant prediction.
- `lightgbm` (optional dependency, requirements-bench.txt): gradient-boosted trees in long format, one row per
  date x target (the standard strong Kaggle approach): features of the target's own legs (spread returns over
  several horizons, volatilities of the spread and legs), of its released labels (the latest, rolling means and
  stds, read from the same release-rule series as the Transformer's revealed labels), its training mean daily
  rank, its lag and its index as a category; trained on centred daily ranks, rounds chosen on the inner split.
- `oracle` (reference, synthetic folders only): the generator's true conditional expectation
  (`oracle_predictions.csv`), the reference a model's score is compared with (not an upper bound).

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
from spread.competition_writer import ORACLE_FILE
from spread.metrics import validation_metrics
from spread.prior import UNSEEN, daily_ranks, mean_rank_prior
from spread.runfolder import CONFIG_FILE, FOLDS_FILE, SUMMARY_FILE, check_new_folder, write_json
from spread.runlog import RunLog, add_honest_scores, summarize
from spread.splits import Fold, fold_table, lag_mapping
from spread.target_features import OWN_FEATURES, own_features
from spread.trainer import competition_folds, load_oracle
from spread.windows import competition_panel, label_matrix, prepare_fold

log = logging.getLogger(__name__)

RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
"""Ridge penalties tried per fold, in units of the number of training rows (features are standardised)."""
INNER_VAL_SHARE = 0.2
"""Share of a fold's training dates held out (after a purge gap) to choose a baseline's hyper-parameters."""
REDUCED_RANKS = (1, 2, 3, 5, 8, 13, 21, 34)
"""Ranks tried by reduced_rank (those above min(features, targets) are skipped)."""
PRIOR_HALF_LIVES = (None, 750.0, 375.0, 180.0, 90.0)
"""Recency half-lives (dates) tried by regularised_prior; None weighs every training date alike."""
PRIOR_SHRINKS = (0.0, 10.0, 50.0, 250.0)
"""Pseudo-days at the middle rank tried by regularised_prior (a target seen on few dates moves to 0.5)."""
LGBM_ROUNDS = (25, 50, 100, 200)
"""Boosting rounds tried by lightgbm."""
LGBM_PARAMS = {
    "objective": "regression", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 500, "max_bin": 63,
    "feature_fraction": 0.9, "bagging_fraction": 0.5, "bagging_freq": 1, "lambda_l2": 10.0,
    "deterministic": True, "force_col_wise": True, "verbosity": -1,
}
"""LightGBM parameters (deterministic for a given seed and thread count)."""


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


def _inner_split(n_rows: int, purge: int) -> tuple[int, int] | None:
    """(fit rows, validation rows) of a fold's training rows: the last `INNER_VAL_SHARE` validate, after `purge`
    rows left out; None when fewer than 2 rows would remain to fit."""
    n_val = max(1, int(n_rows * INNER_VAL_SHARE))
    n_fit = n_rows - n_val - purge
    return None if n_fit < 2 else (n_fit, n_val)


def _purge(ctx: FoldContext) -> int:
    """Rows between the inner fit and validation rows: the release delay of the longest lag."""
    return int(ctx.comp.target_lags.max()) + 1


def _best(name: str, candidates: list, scores: list[float], fallback):
    """The candidate with the best inner-validation score (`fallback` when none is finite), logged."""
    finite = [s if np.isfinite(s) else -np.inf for s in scores]
    if not finite or not np.isfinite(max(finite)):
        return fallback
    best = candidates[int(np.argmax(finite))]
    log.info("%s: inner-validation scores %s -> %s", name, [round(s, 4) for s in finite], best)
    return best


def _choose_alpha(x: np.ndarray, labels: np.ndarray, lags: np.ndarray, purge: int) -> float:
    """The penalty of `RIDGE_ALPHAS` with the best score on the last `INNER_VAL_SHARE` of the rows, after a purge."""
    fallback = RIDGE_ALPHAS[len(RIDGE_ALPHAS) // 2]
    split = _inner_split(len(x), purge)
    if split is None:
        return fallback
    n_fit, n_val = split
    solutions = _ridge_solutions(x[:n_fit], _centred_rank_targets(labels[:n_fit]), RIDGE_ALPHAS)
    truth = labels[-n_val:]
    scores = [validation_metrics(truth, x[-n_val:] @ weights + intercept, lags)["score"]
              for weights, intercept in solutions]
    return _best("ridge alpha", list(RIDGE_ALPHAS), scores, fallback)


def _screened_features(ctx: FoldContext) -> np.ndarray:
    """(T, F) the fold's screened, scaled features on panel rows (missing = 0, the centre), as for the Transformer."""
    cfg = ctx.cfg
    data = prepare_fold(ctx.comp, ctx.fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
    features = data.train.source.body.astype(np.float64)
    if features.shape[1] == 0:
        raise DataError(f"{ctx.fold.name}: the feature screen kept no feature")
    return features


def predict_ridge(ctx: FoldContext) -> np.ndarray:
    """Ridge from the screened, scaled features of each date to the targets' centred daily ranks."""
    features = _screened_features(ctx)
    x, labels = features[ctx.train_rows], ctx.known[ctx.train_rows]
    alpha = _choose_alpha(x, labels, ctx.comp.target_lags, purge=_purge(ctx))
    ((weights, intercept),) = _ridge_solutions(x, _centred_rank_targets(labels), (alpha,))
    return features[ctx.val_rows] @ weights + intercept


def _reduced_rank_fits(
    x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...], ranks: list[int]
) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray]]:
    """(alpha, rank) -> (weights, intercept): each ridge solution projected on the top `rank` right singular vectors
    of its fitted values (reduced-rank regression, Izenman 1975, with a ridge penalty)."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    fits = {}
    for alpha, (weights, _) in zip(alphas, _ridge_solutions(x, y, alphas)):
        _, _, directions = np.linalg.svd((x - x_mean) @ weights, full_matrices=False)
        for rank in ranks:
            projected = weights @ directions[:rank].T @ directions[:rank]
            fits[(alpha, rank)] = (projected, y_mean - x_mean @ projected)
    return fits


def fit_reduced_rank(x: np.ndarray, labels: np.ndarray, lags: np.ndarray, purge: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights (F, N), intercept (N,)) of the reduced-rank ridge regression of all targets' centred daily ranks on
    x (T, F); penalty and rank chosen on an inner, purged split of the rows, then refitted on all of them."""
    ranks = [r for r in REDUCED_RANKS if r <= min(x.shape[1], labels.shape[1])]
    choice = (RIDGE_ALPHAS[len(RIDGE_ALPHAS) // 2], ranks[-1])
    split = _inner_split(len(x), purge)
    if split is not None:
        n_fit, n_val = split
        fits = _reduced_rank_fits(x[:n_fit], _centred_rank_targets(labels[:n_fit]), RIDGE_ALPHAS, ranks)
        scores = [validation_metrics(labels[-n_val:], x[-n_val:] @ w + b, lags)["score"] for w, b in fits.values()]
        choice = _best("reduced_rank (alpha, rank)", list(fits), scores, choice)
    alpha, rank = choice
    ((weights, intercept),) = _reduced_rank_fits(x, _centred_rank_targets(labels), (alpha,), [rank]).values()
    return weights, intercept


def predict_reduced_rank(ctx: FoldContext) -> np.ndarray:
    """Reduced-rank ridge regression of all targets' centred daily ranks on the screened features (`fit_reduced_rank`
    on the fold's training dates)."""
    features = _screened_features(ctx)
    x, labels = features[ctx.train_rows], ctx.known[ctx.train_rows]
    weights, intercept = fit_reduced_rank(x, labels, ctx.comp.target_lags, _purge(ctx))
    return features[ctx.val_rows] @ weights + intercept


def weighted_prior(ranks: np.ndarray, ages: np.ndarray, half_life: float | None, shrink: float) -> np.ndarray:
    """(N,) each target's mean daily rank, day d weighted 0.5^(ages[d] / half_life) (1 when None), shrunk to the
    middle rank 0.5 by `shrink` pseudo-days: (sum w r + shrink 0.5) / (sum w + shrink) over its observed days."""
    weights = np.ones_like(ages, dtype=np.float64) if half_life is None else 0.5 ** (ages / half_life)
    observed = np.isfinite(ranks)
    total = (np.where(observed, ranks, 0.0) * weights[:, None]).sum(axis=0)
    count = (observed * weights[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = (total + shrink * UNSEEN) / (count + shrink)
    return np.where(count + shrink > 0, prior, UNSEEN)


def predict_regularised_prior(ctx: FoldContext) -> np.ndarray:
    """Each target's mean daily rank with a recency half-life and a count-based shrink, the pair chosen on an inner,
    purged split of the training dates (scored as a constant prediction), then refitted on all of them."""
    ranks = daily_ranks(ctx.known[ctx.train_rows])
    dates = ctx.panel.date_ids[ctx.train_rows].astype(np.float64)
    candidates = [(h, k) for h in PRIOR_HALF_LIVES for k in PRIOR_SHRINKS]
    choice = (None, 0.0)
    split = _inner_split(len(ranks), _purge(ctx))
    if split is not None:
        n_fit, n_val = split
        truth = ctx.known[ctx.train_rows][-n_val:]
        scores = []
        for half_life, shrink in candidates:
            prior = weighted_prior(ranks[:n_fit], dates[n_fit - 1] - dates[:n_fit], half_life, shrink)
            scores.append(validation_metrics(truth, np.broadcast_to(prior, truth.shape), ctx.comp.target_lags)["score"])
        choice = _best("regularised_prior (half-life, shrink)", candidates, scores, choice)
    prior = weighted_prior(ranks, dates[-1] - dates, *choice)
    return np.broadcast_to(prior, (len(ctx.val_rows), len(prior))).copy()


def long_features(ctx: FoldContext) -> tuple[list[str], np.ndarray]:
    """Feature names and a (T, N, F) float32 array: target j's own features on each panel row.

    Its `spread.target_features.own_features` (from its legs, raw rows up to t only: the spread's log returns over
    several horizons, the volatilities of the spread and legs; from its released labels, the Transformer's release
    rule: the last one and rolling means and stds), then its mean daily rank over the fold's training dates, its
    lag and its index (a categorical feature, last).
    """
    comp = ctx.comp
    own = own_features(comp.train, comp.labels, comp.pairs, ctx.cfg.features.ffill_limit)  # (T, N, K)
    n_dates, n_targets, _ = own.shape
    extra = [ctx.prior, comp.target_lags.astype(np.float64), np.arange(n_targets, dtype=np.float64)]
    extra = np.stack([np.broadcast_to(values, (n_dates, n_targets)) for values in extra], axis=2)  # (T, N, 3)
    names = [*OWN_FEATURES, "mean_rank", "lag", "target"]
    return names, np.concatenate([own, extra.astype(np.float32)], axis=2)


def _lightgbm():
    try:
        import lightgbm
    except ImportError as exc:
        raise ConfigError(
            "baseline lightgbm needs the optional lightgbm package: pip install -r requirements-bench.txt"
        ) from exc
    return lightgbm


def _fit_lightgbm(features: np.ndarray, labels: np.ndarray, names: list[str], rounds: int, seed: int):
    """A booster on the long rows (`features`: dates x targets rows, `labels`: dates x targets) with a known label;
    target: the centred daily rank."""
    lightgbm = _lightgbm()
    targets = (daily_ranks(labels) - 0.5).ravel()
    known = np.isfinite(targets)
    data = lightgbm.Dataset(features[known], targets[known], feature_name=names,
                            categorical_feature=[names[-1]], free_raw_data=True)
    return lightgbm.train({**LGBM_PARAMS, "seed": seed}, data, num_boost_round=rounds)


def predict_lightgbm(ctx: FoldContext) -> np.ndarray:
    """Gradient-boosted trees in long format (one row per date x target, features of the target's own legs and
    labels, `long_features`); the number of rounds is chosen on an inner, purged split of the training dates."""
    names, features = long_features(ctx)
    n_targets = features.shape[1]
    train_x, train_y = features[ctx.train_rows], ctx.known[ctx.train_rows]
    rounds = LGBM_ROUNDS[-1]
    split = _inner_split(len(train_x), _purge(ctx))
    if split is not None:
        n_fit, n_val = split
        booster = _fit_lightgbm(train_x[:n_fit].reshape(-1, len(names)), train_y[:n_fit], names, LGBM_ROUNDS[-1],
                                ctx.cfg.seed)
        inner_x = train_x[-n_val:].reshape(-1, len(names))
        scores = [validation_metrics(train_y[-n_val:], booster.predict(inner_x, num_iteration=r).reshape(-1, n_targets),
                                     ctx.comp.target_lags)["score"] for r in LGBM_ROUNDS]
        rounds = _best("lightgbm rounds", list(LGBM_ROUNDS), scores, rounds)
    booster = _fit_lightgbm(train_x.reshape(-1, len(names)), train_y, names, rounds, ctx.cfg.seed)
    val_x = features[ctx.val_rows].reshape(-1, len(names))
    return booster.predict(val_x).reshape(len(ctx.val_rows), n_targets)


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
    "reduced_rank": predict_reduced_rank,
    "regularised_prior": predict_regularised_prior,
    "lightgbm": predict_lightgbm,
}
"""name -> predictor: (fold context) -> (validation days, targets) finite predictions."""
REFERENCES: dict[str, Callable[[FoldContext], np.ndarray]] = {"oracle": predict_oracle}
"""Reference predictors that are not baselines (they use knowledge no model has)."""


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
    check_new_folder(out)
    comp = load_competition(data_dir, require_test=False)
    folds = competition_folds(comp, cfg)
    panel = competition_panel(comp, cfg.features)
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names).astype(np.float64)
    oracle = load_oracle(Path(data_dir), comp)
    out.mkdir(parents=True, exist_ok=True)  # everything is read and checked: only now is the run folder written
    save_config(cfg, out / CONFIG_FILE)
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
    add_honest_scores(summary, trained=False)
    summary["baseline"] = name
    summary["run"] = {"device": "cpu", "precision": "fp64", "seconds": round(time.perf_counter() - started, 2)}
    write_json(out / SUMMARY_FILE, summary)
    return summary
