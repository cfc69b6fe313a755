"""The fallback chain, for a call no member can answer: the run's prior (checked), else one computed from the
labels, else the distinct-value placeholder; and the tie-break that keeps any answer from being constant.

The score only exists if every call returns a valid row (shared COMPETITION.md, "The evaluation API"), so a call
without a model answer still gets the best answer left: the run's prior.json when its manifest vouches for it and
it holds exactly the served targets, else the mean-historical-rank prior from train_labels.csv (`spread.prior`,
0.387 on the private leaderboard as a constant), else, when not even the competition's files read, the placeholder;
each step logged and counted (`spread.problems.Problems`). The scorer raises on a constant prediction, hence
`break_ties`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from spread.errors import ArtifactError
from spread.problems import Problems
from spread.runfolder import PRIOR_FILE


def checked_prior(path: Path, target_names: list[str]) -> np.ndarray:
    """The prior.json values in `target_names` order; ArtifactError unless it holds exactly those targets, each a
    rank in [0, 1] (a prior of another competition is not served)."""
    from spread.prior import read_prior

    names, values = read_prior(path)
    missing = [name for name in target_names if name not in set(names)]
    unexpected = [name for name in names if name not in set(target_names)]
    if missing or unexpected:
        raise ArtifactError(
            f"{path}: its targets differ from the served ones: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    if ((values < 0) | (values > 1)).any():
        raise ArtifactError(f"{path}: prior values must be ranks in [0, 1]")
    by_name = dict(zip(names, values.tolist()))
    return np.array([by_name[name] for name in target_names], dtype=np.float64)


def prior_from_labels(labels: pl.DataFrame, target_names: list[str]) -> np.ndarray:
    """The mean-historical-rank prior computed from a label frame (a target it lacks gets the middle rank)."""
    from spread.prior import UNSEEN, mean_rank_prior

    present = [name for name in target_names if name in labels.columns]
    values = labels.select([pl.col(name).cast(pl.Float64, strict=False) for name in present]).to_numpy()
    by_name = dict(zip(present, mean_rank_prior(values.astype(np.float64)).tolist()))
    return np.array([by_name.get(name, UNSEEN) for name in target_names], dtype=np.float64)


def served_prior(
    run_dir: Path | None, target_names: list[str], labels: Callable[[], pl.DataFrame], problems: Problems,
    trust_run: bool = True,
) -> tuple[np.ndarray, str]:
    """(prior, "run" | "labels"): the run's prior.json when its manifest vouches for it and it holds exactly the
    served targets, else one computed from `labels()` (train_labels.csv), each step logged. `trust_run` False (a
    run trained for another competition) skips the run's prior."""
    from spread.checkpoint import read_manifest, verify_artifact

    if run_dir is not None and trust_run:
        try:
            manifest = read_manifest(run_dir)
            path = verify_artifact(run_dir, manifest, manifest["inference"].get("prior", PRIOR_FILE))
            return checked_prior(path, target_names), "run"
        except ArtifactError as exc:
            problems.report("prior-from-labels", f"{exc}; computing the prior from train_labels.csv", logging.ERROR)
    elif run_dir is not None:
        problems.report("prior-from-labels", f"{run_dir} was trained for another competition: its prior is not "
                        "served; computing the prior from train_labels.csv", logging.ERROR)
    return prior_from_labels(labels(), target_names), "labels"


def usable(values: np.ndarray) -> bool:
    """Finite everywhere and not constant (the scorer raises on a constant prediction)."""
    return values.size > 0 and bool(np.isfinite(values).all()) and float(values.max() - values.min()) > 0


def break_ties(values: np.ndarray) -> np.ndarray:
    """`values` with a tiny index-ordered tie-break when constant, so that the answer is never constant."""
    if usable(values):
        return values
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.5, posinf=1.0, neginf=0.0)
    return values + np.linspace(0.0, 1e-6, len(values))


def emergency_values(
    target_names: list[str], run_dir: Path | None, competition_dir: Path, problems: Problems
) -> tuple[np.ndarray, str]:
    """(values, "prior" | "placeholder") when no predictor could be built: the run's prior checked against
    `target_names`, else a prior from train_labels.csv, else distinct placeholder values; each step logged."""
    from spread.competition import LABELS, read_text_csv

    def labels() -> pl.DataFrame:
        return read_text_csv(competition_dir / LABELS)

    try:
        values, source = served_prior(run_dir, target_names, labels, problems)
        return break_ties(values), "prior"
    except Exception as exc:  # nothing left but the placeholder
        problems.report("placeholder", f"no prior either ({type(exc).__name__}: {exc}): placeholder answers",
                        logging.ERROR)
    return np.linspace(0.25, 0.75, len(target_names)), "placeholder"

