"""The constant fallback prediction: each target's mean historical daily rank.

Ranking each day's non-null labels (average method), scaling the ranks to [0, 1] and averaging them over days gives
one number per target. Submitted as a constant every day it scored 0.387 on the competition's final private
leaderboard (shared COMPETITION.md, "Reference points"), so the predictor uses it as its never-fail answer: when a
model cannot run, the day still gets finite, sensible values. The trainer writes it to `prior.json` in every run.
z-scored across targets (`prior_input`), a fit's own prior is also what a model with `model.prior_weight` adds to
every prediction (`spread.forecast.predictions`), and `zscore` is the scale the online update's priors share.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spread.errors import ArtifactError
from spread.metrics import average_ranks

UNSEEN = 0.5
"""Prior of a target that never had a label: the middle rank."""


def daily_ranks(values: np.ndarray) -> np.ndarray:
    """Per row, average ranks of the finite values scaled to [0, 1] by (rank - 1) / (n - 1) (0.5 when n = 1).

    NaN in the other cells. The rank scale the prior, the peers and every correction on ranks share.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    ranks = average_ranks(np.where(valid, values, 0.0), valid)
    counts = valid.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(counts > 1, (ranks - 1.0) / (counts - 1.0), UNSEEN)
    scaled[~valid] = np.nan
    return scaled


def mean_rank_prior(labels: np.ndarray) -> np.ndarray:
    """(N,) mean over days of each target's scaled daily rank (`daily_ranks`), from a (D, N) label matrix with NaN
    for missing. A target never observed gets 0.5.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (days, targets) matrix, got shape {labels.shape}")
    scaled = daily_ranks(labels)
    days_seen = np.isfinite(scaled).sum(axis=0)
    totals = np.nansum(scaled, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(days_seen > 0, totals / np.maximum(days_seen, 1), UNSEEN)
    return prior


def zscore(values: np.ndarray) -> np.ndarray:
    """(N,) values centred and scaled across targets; all zeros when they are constant."""
    centred = values - values.mean()
    std = centred.std()
    return centred / std if std > 0 else np.zeros_like(centred)


def prior_input(labels: np.ndarray) -> np.ndarray:
    """(N,) float32 `mean_rank_prior` of a (D, N) label matrix, z-scored across targets (all 0 when every target's
    prior is the same): the prior a model with `model.prior_weight` adds to its predictions."""
    return zscore(mean_rank_prior(labels)).astype(np.float32)


def write_prior(path: str | Path, target_names: list[str], prior: np.ndarray) -> Path:
    """Write `{"target_names": [...], "prior": [...]}` as JSON."""
    path = Path(path)
    if len(target_names) != len(prior):
        raise ValueError(f"{len(target_names)} target names but {len(prior)} prior values")
    path.write_text(json.dumps({"target_names": list(target_names), "prior": [float(v) for v in prior]}, indent=1))
    return path


def read_prior(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The target names and prior values of a `prior.json`; ArtifactError naming the file when it is unusable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        names, values = list(data["target_names"]), np.asarray(data["prior"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a readable prior file: {exc}") from exc
    if len(names) != values.size or not np.isfinite(values).all():
        raise ArtifactError(f"{path}: prior must hold one finite value per target name")
    return names, values
