"""Experiment logging for a run folder: metrics.csv, TensorBoard events, summary.json and progress display.

One `RunLog` per run, alive only on the process that writes (rank 0 under DDP; the others get a disabled log).
`metrics.csv` has one row per fold per epoch; it is rewritten whole after every epoch from the rows held in memory,
so that a resumed run (which restores each fold's rows from its checkpoint) never carries rows of an epoch it
re-trains. `summarize` reduces the per-fold results to `summary.json`: per-fold metrics at the best epoch and the
mean and population std over folds of every metric.
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
