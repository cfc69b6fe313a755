"""The bench's statistics: honest score cells from run summaries, and per model the paired difference to the best
peer.

A cell is one (source, model, data seed, training seed, fold) score, and every score is honest: nothing chose it
on the dates it scores. A Transformer's walk-forward fold counts with its `honest_score` from summary.json (the
score at the epoch count the other walk-forward folds choose, `spread.trainer.honest_scores`), never with its best
epoch picked on that fold's own dates (kept beside it as `best_epoch_score`, to show the optimism it would add);
its holdout is honest by construction (a fixed epoch count chosen from the walk-forward folds). Baselines, peers
and the oracle choose no epoch: their fold scores are honest already (peers pick their hyper-parameters on an
inner split of the training dates, `spread.lab.baselines`).

The baselines and the oracle do not depend on the training seed (null there), so every other model's cell is
paired with the best peer's score on the same data seed and fold. The best peer is the member of `PEERS` with the
highest mean score on that source (chosen on the scored cells themselves, which flatters the peer, never the
Transformer). Pure functions of the cells: `spread.lab.render` writes them as markdown.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from spread.runlog import as_float, fraction_of, honest_fold_score

BASELINE_NAMES = ("mean_rank", "last_label", "ridge", "reduced_rank", "regularised_prior", "lightgbm")
PEERS = ("ridge", "reduced_rank", "lightgbm", "regularised_prior", "mean_rank")
"""The baselines the best peer is chosen from: what a competitor would otherwise submit (linear models, the
standard long-format LightGBM, a regularised or plain constant prior: 10th place and a 0.387 submission on the real
leaderboard). `last_label` is left out: it is a diagnostic whose sign says momentum or reversal in the spreads
(-0.18 on the real served dates), not a forecaster anyone would submit; its row still shows its paired difference."""
ORACLE = "oracle"
TRANSFORMERS = ("transformer_default", "transformer_tuned")

SCORE_SCHEMA = {
    "source": pl.String, "model": pl.String, "data_seed": pl.Int64, "train_seed": pl.Int64, "fold": pl.String,
    "score": pl.Float64, "best_epoch_score": pl.Float64, "oracle_score": pl.Float64,
}
"""One row per scored cell; train_seed is null for models that do not depend on it (baselines, oracle). `score` is
the honest score; `best_epoch_score` the best epoch picked on the fold's own dates (Transformer walk-forward folds
only, NaN elsewhere), shown beside it and never used."""


def summary_cells(summary: dict, source: str, model: str, data_seed: int, train_seed: int | None) -> list[dict]:
    """The per-fold honest score cells of a run's summary.json (a baseline's carries "baseline"; else a trainer's)."""
    trained = "baseline" not in summary
    cells = []
    for fold, result in summary["folds"].items():
        score, best_epoch_score = honest_fold_score(fold, result, trained)
        cells.append({
            "source": source, "model": model, "data_seed": data_seed, "train_seed": train_seed, "fold": fold,
            "score": score, "best_epoch_score": best_epoch_score, "oracle_score": as_float(result.get("oracle_score")),
        })
    return cells


def mean_std(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std())


def best_peer(scores: pl.DataFrame, source: str) -> str | None:
    """The member of `PEERS` with the highest mean score on `source` (None when no peer was scored)."""
    rows = scores.filter((pl.col("source") == source) & pl.col("model").is_in(list(PEERS)))
    if rows.height == 0:
        return None
    means = rows.group_by("model").agg(pl.col("score").fill_nan(None).mean())
    return str(means.sort(["score", "model"], descending=[True, False], nulls_last=True)["model"][0])


def paired_difference(cells: pl.DataFrame, reference: pl.DataFrame,
                      on: tuple[str, ...] = ("data_seed", "fold")) -> np.ndarray:
    """Per cell of `cells`, its score minus `reference`'s on the same data seed and fold (finite pairs only);
    `on` adds "train_seed" to pair two Transformer configs seed by seed."""
    paired = cells.join(reference.select(*on, pl.col("score").alias("reference")), on=list(on), how="inner")
    diffs = (paired["score"] - paired["reference"]).to_numpy()
    return diffs[np.isfinite(diffs)]


def oracle_fraction(cells: pl.DataFrame, oracle: pl.DataFrame) -> float:
    """The cells' mean score over the oracle's mean on the same (data seed, fold), over cells where both are finite."""
    paired = cells.join(oracle.select("data_seed", "fold", pl.col("score").alias("oracle_cell")),
                        on=["data_seed", "fold"], how="inner")
    return fraction_of(paired["score"].to_list(), paired["oracle_cell"].to_list())


QUALITY_SCHEMA = {
    "source": pl.String, "model": pl.String, "cells": pl.Int64, "mean": pl.Float64, "std": pl.Float64,
    "best_peer": pl.String, "diff_mean": pl.Float64, "diff_std": pl.Float64, "wins": pl.String,
    "oracle_fraction": pl.Float64, "epoch_pick_gain": pl.Float64,
}
"""One row per (source, model): finite cells, mean/std honest score, paired difference to the best peer (mean,
population std, "won/paired"), fraction of the oracle, and the mean of best-epoch minus honest score where both
exist (what picking the epoch on the scored fold would have added)."""


def quality_table(scores: pl.DataFrame) -> pl.DataFrame:
    """Per source and model: cells, mean/std score, paired difference to the best peer, wins, oracle fraction."""
    rows = []
    for source in scores["source"].unique(maintain_order=True).to_list():
        on_source = scores.filter(pl.col("source") == source)
        best = best_peer(scores, source)
        reference = None if best is None else on_source.filter(pl.col("model") == best)
        oracle = on_source.filter(pl.col("model") == ORACLE)
        for model in on_source["model"].unique(maintain_order=True).to_list():
            cells = on_source.filter(pl.col("model") == model)
            values = cells["score"].to_numpy()
            mean, std = mean_std(values)
            gain, _ = mean_std((cells["best_epoch_score"] - cells["score"]).to_numpy())
            row = {"source": source, "model": model, "cells": int(np.isfinite(values).sum()), "mean": mean,
                   "std": std, "best_peer": best, "diff_mean": float("nan"), "diff_std": float("nan"), "wins": None,
                   "oracle_fraction": float("nan"), "epoch_pick_gain": gain}
            if reference is not None and model not in (best, ORACLE):
                diffs = paired_difference(cells, reference)
                row["diff_mean"], row["diff_std"] = mean_std(diffs)
                row["wins"] = f"{int((diffs > 0).sum())}/{diffs.size}"
            if oracle.height and model != ORACLE:
                row["oracle_fraction"] = oracle_fraction(cells, oracle)
            rows.append(row)
    return pl.DataFrame(rows, schema=QUALITY_SCHEMA, orient="row") if rows else pl.DataFrame(schema=QUALITY_SCHEMA)


def fold_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Per source, model and fold: the honest score's mean, population std and count over data and training seeds."""
    return (
        scores.with_columns(pl.col("score").fill_nan(None))
        .group_by("source", "model", "fold", maintain_order=True)
        .agg(pl.col("score").mean().alias("mean"), pl.col("score").std(ddof=0).alias("std"),
             pl.col("score").count().alias("n"))
    )
