"""Experiment logging for a run folder: metrics.csv, TensorBoard events, summary.json and progress display.

One `RunLog` per run, alive only on the process that writes (rank 0 under DDP; the others get a disabled log).
`metrics.csv` has one row per fold per epoch; it is rewritten whole after every epoch from the rows held in memory,
so that a resumed run (which restores each fold's rows from its checkpoint) never carries rows of an epoch it
re-trains. `summarize` reduces the per-fold results to `summary.json`: per-fold metrics at the best epoch and the
mean and population std over folds of every metric; `add_honest_scores` adds the run's honest score (what nothing
chose on the dates it scores, `honest_fold_score`), which `oracle_fraction` and the printed `score_headline` use.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spread.runfolder import METRICS_FILE, TENSORBOARD_DIR, atomic_write
from spread.splits import HOLDOUT

log = logging.getLogger(__name__)

def is_terminal() -> bool:
    """True when stderr is attached to a terminal (progress bars), False in logs, CI and notebooks' captured output."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable: Iterable, total: int, description: str, enabled: bool) -> Iterable:
    """A tqdm bar over `iterable` (steps, steps/s, ETA) when enabled and stderr is a terminal; else the iterable."""
    if enabled and is_terminal():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return iterable
        return tqdm(iterable, total=total, desc=description, unit="step", leave=False, dynamic_ncols=True)
    return iterable


class ProgressLines:
    """Plain progress lines of a fit for logs without a terminal: at most one every `every_s` seconds, with the
    step, the epoch's mean loss so far, steps/s and the ETA of the fit's remaining steps (0 s: no lines)."""

    def __init__(self, name: str, every_s: float, total_steps: int, clock: Callable[[], float] = time.monotonic):
        self.name, self.every_s, self.total_steps, self.clock = name, every_s, total_steps, clock
        self.started = self.last = clock()
        self.first_step: int | None = None

    def update(self, step: int, epoch: int, loss: float) -> None:
        """After optimiser step `step` (1-based within the fit) of epoch `epoch`, with the epoch's mean loss."""
        if self.first_step is None:  # the steps before this session (a resumed fit) do not count
            self.first_step = step - 1
        now = self.clock()
        if not self.every_s or now - self.last < self.every_s:
            return
        self.last = now
        rate = (step - self.first_step) / max(now - self.started, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        log.info("%s epoch %d step %d/%d loss %.4f, %.2f steps/s, ETA %s", self.name, epoch, step, self.total_steps,
                 loss, rate, format_seconds(eta))


def format_seconds(seconds: float) -> str:
    """12s, 3m05s, 1h02m (or ? when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunLog:
    """metrics.csv and optional TensorBoard scalars of one run; every method is a no-op when disabled."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.rows: dict[str, list[dict]] = {}
        self.writer = self._tensorboard_writer() if enabled and tensorboard else None

    def _tensorboard_writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an optional dependency
            log.warning("train.tensorboard is set but TensorBoard is not importable (%s): events not written", exc)
            return None
        return SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def restore(self, fold: str, rows: list[dict]) -> None:
        """Replace the rows of `fold` (used on resume with the rows stored in its checkpoint)."""
        self.rows[fold] = [dict(row) for row in rows]
        self._write_csv()

    def log_epoch(self, fold: str, row: dict) -> None:
        """Record one epoch's row (fold, epoch, step, lr, train loss parts, validation metrics)."""
        if not self.enabled:
            return
        self.rows.setdefault(fold, []).append(dict(row))
        self._write_csv()
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"{fold}/{key}", value, global_step=int(row.get("step", 0)))
            self.writer.flush()

    def _write_csv(self) -> None:
        if not self.enabled:
            return
        rows = [row for fold_rows in self.rows.values() for row in fold_rows]
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        atomic_write(self.run_dir / METRICS_FILE, lambda tmp: tmp.write_text(text))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mean_std(values: list) -> tuple[float, float]:
    """Mean and population std of the finite numbers among `values` (NaN, NaN when there is none)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def summarize(folds: dict[str, dict]) -> dict:
    """Mean and population std over folds of each metric in `folds[name]["metrics"]` (NaN-skipping).

    `folds` maps a fold name to its result (at least "metrics": a flat dict of floats at the best epoch); the
    result is {"folds": folds, "mean": {...}, "std": {...}}.
    """
    keys: dict[str, None] = {}
    for result in folds.values():
        keys.update(dict.fromkeys(k for k, v in result.get("metrics", {}).items() if isinstance(v, (int, float))))
    mean, std = {}, {}
    for key in keys:
        mean[key], std[key] = mean_std([result.get("metrics", {}).get(key, float("nan")) for result in folds.values()])
    return {"folds": folds, "mean": mean, "std": std}


def as_float(value) -> float:
    """None as NaN, any other number as a float."""
    return float("nan") if value is None else float(value)


def honest_fold_score(fold: str, result: dict, trained: bool) -> tuple[float, float]:
    """(honest score, best-epoch score) of one fold entry of a summary.json; `trained`: a trainer's summary.

    A trained walk-forward fold counts with its `honest_score`, NaN when null or absent (one walk-forward fold, or
    a summary older than honest scores), or with its `honest_ensemble` score when the run refitted its folds as
    seed ensembles (`train.fold_members`): never its best-epoch score. The holdout (a fixed-length fit) and the folds
    of a baseline (no epoch choice) count with their `metrics.score`; their best-epoch score is NaN. A holdout of
    several members (`train.holdout_members`) counts with its ensemble's score, the run's public-leaderboard
    estimate.
    """
    metric = as_float((result.get("metrics") or {}).get("score"))
    if trained and fold == HOLDOUT and result.get("ensemble"):
        return as_float(result["ensemble"]["score"]), float("nan")
    if trained and fold != HOLDOUT and result.get("honest_ensemble"):
        return as_float(result["honest_ensemble"]["score"]), as_float(result.get("best_epoch_score", metric))
    if not trained or fold == HOLDOUT:
        return metric, float("nan")
    return as_float(result.get("honest_score")), as_float(result.get("best_epoch_score", metric))


def add_honest_scores(summary: dict, trained: bool) -> None:
    """Add to a `summarize`d summary its honest score and, with oracle scores (synthetic data), the oracle fraction.

    summary["honest"]: `score` / `std`, the mean and population std over the folds of `honest_fold_score` (NaN
    folds left out), `folds` (fold -> honest score) and `n_folds` (the finite ones). summary["mean"]["oracle_score"]:
    the oracle's mean over every fold; summary["oracle_fraction"]: the honest mean over the oracle's mean on the
    same folds. (`mean.score` stays the mean of each fold's reported epoch: for a trainer's walk-forward folds the
    best epoch picked on their own validation dates, an optimistic figure.)"""
    folds = summary["folds"]
    scores = {fold: honest_fold_score(fold, result, trained)[0] for fold, result in folds.items()}
    mean, std = mean_std(list(scores.values()))
    summary["honest"] = {"score": mean, "std": std, "folds": scores,
                         "n_folds": sum(math.isfinite(v) for v in scores.values())}
    oracle = {fold: as_float(result.get("oracle_score")) for fold, result in folds.items()}
    if any(math.isfinite(v) for v in oracle.values()):
        summary["mean"]["oracle_score"] = mean_std(list(oracle.values()))[0]
        summary["oracle_fraction"] = fraction_of([scores[f] for f in folds], [oracle[f] for f in folds])


def fraction_of(scores: list, ceilings: list) -> float:
    """The mean of `scores` over the mean of `ceilings` (the oracle's), over the positions where both are finite;
    NaN when there is none or the ceilings' mean is 0."""
    pairs = [(as_float(s), as_float(c)) for s, c in zip(scores, ceilings)]
    both = [(s, c) for s, c in pairs if math.isfinite(s) and math.isfinite(c)]
    ceiling = sum(c for _, c in both)
    return sum(s for s, _ in both) / ceiling if both and ceiling != 0 else float("nan")


def score_headline(summary: dict) -> str:
    """The one line `spread train`, `spread baseline` and the train kernel print: the honest score over every fold,
    and for a trainer's walk-forward folds their honest mean beside the optimistic mean of their best epochs."""
    honest = summary["honest"]
    if not honest["n_folds"]:
        return "honest validation score: none (a single walk-forward fold has no other to choose its epochs from)"
    line = f"honest validation score: {honest['score']:.6f} +- {honest['std']:.6f} over {honest['n_folds']} fold(s)"
    mean = summary.get("mean", {})
    walk_forward, best = as_float(mean.get("honest_score")), as_float(mean.get("best_epoch_score"))
    if "baseline" not in summary and math.isfinite(walk_forward) and math.isfinite(best):
        line += (f"; walk-forward folds {walk_forward:.6f} at the epoch count the other folds choose, {best:.6f} "
                 "at their best epochs (picked on their own validation dates: optimistic)")
    return line
