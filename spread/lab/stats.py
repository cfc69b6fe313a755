"""The bench's statistics: score cells from run summaries, and per model the paired difference to the best baseline.

A cell is one (source, model, data seed, training seed, fold) score. The baselines and the oracle do not depend on
the training seed (null there), so every other model's cell is paired with the best baseline's score on the same
data seed and fold; the best baseline is the one with the highest mean score on that source. Pure functions of
the cells: `spread.lab.render` writes them as markdown.
"""

from __future__ import annotations

import numpy as np
import polars as pl

BASELINE_NAMES = ("mean_rank", "last_label", "ridge", "reduced_rank", "regularised_prior", "lightgbm")
ORACLE = "oracle"
TRANSFORMERS = ("transformer_default", "transformer_tuned")

SCORE_SCHEMA = {
    "source": pl.String, "model": pl.String, "data_seed": pl.Int64, "train_seed": pl.Int64, "fold": pl.String,
    "score": pl.Float64, "oracle_score": pl.Float64,
}
"""One row per scored cell; train_seed is null for models that do not depend on it (baselines, oracle)."""


def summary_cells(summary: dict, source: str, model: str, data_seed: int, train_seed: int | None) -> list[dict]:
    """The per-fold score cells of a run's summary.json (trainer or baseline)."""
    cells = []
    for fold, result in summary["folds"].items():
        score = (result.get("metrics") or {}).get("score")
        cells.append({
            "source": source, "model": model, "data_seed": data_seed, "train_seed": train_seed, "fold": fold,
            "score": float("nan") if score is None else float(score),
            "oracle_score": float("nan") if result.get("oracle_score") is None else float(result["oracle_score"]),
        })
    return cells


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std())


def best_baseline(scores: pl.DataFrame, source: str) -> str | None:
    """The baseline with the highest mean score on `source` (None when no baseline was scored)."""
    rows = scores.filter((pl.col("source") == source) & pl.col("model").is_in(list(BASELINE_NAMES)))
    if rows.height == 0:
        return None
    means = rows.group_by("model").agg(pl.col("score").fill_nan(None).mean()).sort("score", descending=True)
    return str(means["model"][0])


def quality_table(scores: pl.DataFrame) -> pl.DataFrame:
    """Per source and model: cells, mean/std score, paired difference to the best baseline, wins, oracle fraction."""
    rows = []
    for source in scores["source"].unique(maintain_order=True).to_list():
        on_source = scores.filter(pl.col("source") == source)
        best = best_baseline(scores, source)
        reference = None
        if best is not None:
            reference = on_source.filter(pl.col("model") == best).select(
                "data_seed", "fold", pl.col("score").alias("best_score")
            )
        oracle = on_source.filter(pl.col("model") == ORACLE).select(
            "data_seed", "fold", pl.col("score").alias("oracle_cell")
        )
        for model in on_source["model"].unique(maintain_order=True).to_list():
            cells = on_source.filter(pl.col("model") == model)
            mean, std = _mean_std(cells["score"].to_numpy())
            row = {"source": source, "model": model, "cells": cells.height, "mean": mean, "std": std,
                   "best_baseline": best, "diff_mean": float("nan"), "diff_std": float("nan"), "wins": None,
                   "oracle_fraction": float("nan")}
            if reference is not None and model != best and model != ORACLE:
                paired = cells.join(reference, on=["data_seed", "fold"], how="inner")
                diffs = (paired["score"] - paired["best_score"]).to_numpy()
                row["diff_mean"], row["diff_std"] = _mean_std(diffs)
                row["wins"] = f"{int((diffs > 0).sum())}/{int(np.isfinite(diffs).sum())}"
            if oracle.height and model != ORACLE:
                paired = cells.join(oracle, on=["data_seed", "fold"], how="inner")
                model_mean, _ = _mean_std(paired["score"].to_numpy())
                oracle_mean, _ = _mean_std(paired["oracle_cell"].to_numpy())
                row["oracle_fraction"] = model_mean / oracle_mean if oracle_mean else float("nan")
            rows.append(row)
    schema = {"source": pl.String, "model": pl.String, "cells": pl.Int64, "mean": pl.Float64, "std": pl.Float64,
              "best_baseline": pl.String, "diff_mean": pl.Float64, "diff_std": pl.Float64, "wins": pl.String,
              "oracle_fraction": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
