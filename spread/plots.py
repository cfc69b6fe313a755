"""Pictures of a finished run folder, drawn from its files into RUN/plots/ (and the bench's score table).

Each picture reads one file the trainer writes and nothing else, so it can be redrawn at any time with
`python -m spread plots RUN`:

    training.png  metrics.csv        per fold: validation score (the oracle's as a line when summary.json has it),
                                     validation IC (mean and per lag), and the training loss terms, per epoch
    lag_ic.png    summary.json       IC and ICIR per target lag at each fold's best epoch, with the mean over folds
    gates.png     gate_weights.csv   the learned feature gates sorted (per fold and mean) with the pruning
                                     threshold, and the top and bottom features by mean gate
    folds.png     folds.csv          the fold timeline over date_id: training, purge and validation ranges

Figures are built on matplotlib's `Figure` with the Agg canvas: no pyplot, no global backend switch, so drawing
works headless (CI, a Kaggle kernel) and leaves a notebook's own backend alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spread.errors import DataError, SpreadError

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
DPI = 100
TOP_FEATURES = 15
"""Features shown at each end of the gate ranking."""
COLORS = {"train": "#4C72B0", "purge": "#BBBBBB", "val": "#DD8452"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def _read_csv(path: Path, required: Iterable[str]) -> pl.DataFrame:
    """The table at `path`; FileNotFoundError when absent, DataError naming the file for a bad or short one."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        table = pl.read_csv(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    return table


def _read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(summary.get("folds"), dict) or not summary["folds"]:
        raise DataError(f"{path}: no \"folds\" mapping")
    return summary


def _lags(names: Iterable[str], prefix: str) -> list[int]:
    """The sorted K of every `<prefix>K` name (e.g. ic_lag1 -> 1)."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)")
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, names) if m)


def _series(rows: pl.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the rows where `column` is set."""
    if column not in rows.columns:
        return np.array([]), np.array([])
    kept = rows.select("epoch", pl.col(column).cast(pl.Float64, strict=False)).drop_nulls()
    return kept["epoch"].to_numpy(), kept[column].to_numpy()


def plot_training(run_dir: str | Path, path: str | Path) -> Path:
    """training.png: one row per fold of metrics.csv; validation score, validation IC, training loss per epoch."""
    run_dir = Path(run_dir)
    metrics = _read_csv(run_dir / "metrics.csv", ["fold", "epoch"])
    if metrics.height == 0:
        raise DataError(f"{run_dir / 'metrics.csv'}: no rows")
    try:
        oracle = {name: fold.get("oracle_score") for name, fold in _read_summary(run_dir)["folds"].items()}
    except (FileNotFoundError, DataError):
        oracle = {}
    folds = metrics["fold"].cast(pl.String).unique(maintain_order=True).to_list()
    lag_columns = [f"val_ic_lag{k}" for k in _lags(metrics.columns, "val_ic_lag")]
    loss_columns = [c for c in metrics.columns if c.startswith("train_") and c != "train_total"]
    figure = _figure(13, 2.6 * len(folds) + 0.4)
    axes = figure.subplots(len(folds), 3, squeeze=False)
    for row, fold in zip(axes, folds):
        rows = metrics.filter(pl.col("fold").cast(pl.String) == fold).sort("epoch")
        epochs, score = _series(rows, "val_score")
        row[0].plot(epochs, score, marker="o", color="C0", label="validation score")
        if np.isfinite(score).any():  # a fit whose every validation score is NaN (diverged) has no best epoch
            best = int(np.nanargmax(score))
            row[0].scatter([epochs[best]], [score[best]], s=90, facecolors="none", edgecolors="C3",
                           label=f"best: {score[best]:.3f} @ epoch {epochs[best]}", zorder=3)
        if oracle.get(fold) is not None:
            row[0].axhline(oracle[fold], color="0.3", linestyle="--", linewidth=1, label=f"oracle {oracle[fold]:.3f}")
        row[0].set_ylabel(fold)
        epochs, ic = _series(rows, "val_ic_mean")
        row[1].plot(epochs, ic, marker="o", color="k", label="mean IC")
        for column in lag_columns:
            row[1].plot(*_series(rows, column), linewidth=1, alpha=0.7, label=column.removeprefix("val_ic_"))
        row[1].axhline(0, color="0.6", linewidth=0.8)
        row[2].plot(*_series(rows, "train_total"), marker="o", color="k", label="total")
        for column in loss_columns:
            row[2].plot(*_series(rows, column), linewidth=1, label=column.removeprefix("train_"))
        for axis in row:
            axis.set_xlabel("epoch")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=7, loc="best")
    axes[0][0].set_title("validation score (rank-correlation Sharpe)")
    axes[0][1].set_title("validation IC (daily Spearman)")
    axes[0][2].set_title("training loss")
    return _save(figure, Path(path))


def plot_lag_ic(run_dir: str | Path, path: str | Path) -> Path:
    """lag_ic.png: IC and ICIR per lag at each fold's best epoch (summary.json), the fold mean with its std."""
    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    folds = {name: fold.get("metrics") or {} for name, fold in summary["folds"].items()}
    lags = sorted(set().union(*(_lags(metrics, "ic_lag") for metrics in folds.values())))
    if not lags:
        raise DataError(f"{run_dir / 'summary.json'}: no ic_lagK metrics in any fold")
    figure = _figure(11, 3.6)
    axes = figure.subplots(1, 2)
    width = 0.8 / (len(folds) + 1)
    x = np.arange(len(lags))
    for axis, stat in zip(axes, ("ic", "icir")):
        for i, (name, metrics) in enumerate(folds.items()):
            values = [metrics.get(f"{stat}_lag{k}", np.nan) for k in lags]
            axis.bar(x + i * width, np.asarray(values, dtype=float), width, label=name, alpha=0.8)
        mean = np.asarray([summary.get("mean", {}).get(f"{stat}_lag{k}", np.nan) for k in lags], dtype=float)
        std = np.asarray([summary.get("std", {}).get(f"{stat}_lag{k}", np.nan) for k in lags], dtype=float)
        axis.bar(x + len(folds) * width, mean, width, yerr=std, capsize=3, color="k", alpha=0.75, label="mean +- std")
        axis.set_xticks(x + width * len(folds) / 2, [f"lag {k}" for k in lags])
        axis.axhline(0, color="0.5", linewidth=0.8)
        axis.grid(axis="y", alpha=0.3)
        axis.set_title({"ic": "IC (mean daily Spearman) per lag", "icir": "ICIR (mean / std of daily IC) per lag"}[stat])
        axis.legend(fontsize=7)
    return _save(figure, Path(path))


def _prune_rule(run_dir: Path) -> tuple[float, int]:
    """(train.prune_threshold, train.prune_top_k) of the run's config.yaml, else the defaults."""
    from spread.config import Config, load_config

    config_file = run_dir / "config.yaml"
    try:
        train = load_config(config_file).train if config_file.is_file() else Config().train
    except SpreadError as exc:
        log.warning("%s: %s; the gate picture uses the default pruning rule", config_file, exc)
        train = Config().train
    return train.prune_threshold, train.prune_top_k


def plot_gates(run_dir: str | Path, path: str | Path) -> Path:
    """gates.png: sorted gate values (gate_weights.csv) with the pruning rule, and the top and bottom features."""
    run_dir = Path(run_dir)
    gates = _read_csv(run_dir / "gate_weights.csv", ["feature", "mean"])
    if gates.height == 0:
        raise DataError(f"{run_dir / 'gate_weights.csv'}: no rows")
    gates = gates.sort("mean", descending=True, nulls_last=True)
    folds = [c for c in gates.columns if c not in ("feature", "mean")]
    threshold, top_k = _prune_rule(run_dir)
    figure = _figure(13, 5.2)
    ranked, top, bottom = figure.subplots(1, 3, width_ratios=[1.4, 1, 1])
    rank = np.arange(1, gates.height + 1)
    for fold in folds:
        ranked.plot(rank, gates[fold].cast(pl.Float64).to_numpy(), linewidth=0.8, alpha=0.6, label=fold)
    ranked.plot(rank, gates["mean"].to_numpy(), color="k", linewidth=1.8, label="mean")
    if top_k > 0:
        ranked.axvline(top_k + 0.5, color="C3", linestyle="--", label=f"keep top {top_k}")
    else:
        ranked.axhline(threshold, color="C3", linestyle="--", label=f"prune threshold {threshold:g}")
    ranked.set_xlabel("feature rank (by mean gate)")
    ranked.set_ylabel("gate value")
    ranked.set_title(f"{gates.height} feature gates, sorted")
    ranked.grid(alpha=0.3)
    ranked.legend(fontsize=7)
    n = min(TOP_FEATURES, gates.height)
    for axis, part, title in ((top, gates.head(n), f"top {n}"), (bottom, gates.tail(n), f"bottom {n}")):
        names = part["feature"].cast(pl.String).to_list()[::-1]
        axis.barh(names, part["mean"].to_numpy()[::-1], color="C0")
        if top_k == 0:
            axis.axvline(threshold, color="C3", linestyle="--")
        axis.set_title(f"{title} (mean gate)")
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    return _save(figure, Path(path))


def plot_folds(run_dir: str | Path, path: str | Path) -> Path:
    """folds.png: one bar per fold of folds.csv over date_id: training dates, the purge gap, validation dates."""
    run_dir = Path(run_dir)
    folds = _read_csv(run_dir / "folds.csv", ["fold", "train_start", "train_end", "val_start", "val_end"])
    if folds.height == 0:
        raise DataError(f"{run_dir / 'folds.csv'}: no rows")
    figure = _figure(11, 0.6 * folds.height + 1.6)
    axis = figure.subplots()
    labels = []
    for y, row in enumerate(folds.iter_rows(named=True)):
        spans = {"train": (row["train_start"], row["train_end"] + 1),
                 "purge": (row["train_end"] + 1, row["val_start"]),
                 "val": (row["val_start"], row["val_end"] + 1)}
        for part, (start, stop) in spans.items():
            if stop > start:
                axis.barh(y, stop - start, left=start, color=COLORS[part], edgecolor="white",
                          label={"train": "training label dates", "purge": "purge (labels not yet released)",
                                 "val": "validation dates"}[part] if y == 0 else None)
        if row.get("cutoff") is not None:
            axis.plot([row["cutoff"] + 0.5] * 2, [y - 0.4, y + 0.4], color="k", linewidth=1.2,
                      label="cutoff (last date known)" if y == 0 else None)
        labels.append(f"{row['fold']}  (train {row['train_end'] - row['train_start'] + 1}, "
                      f"gap {row['val_start'] - row['train_end'] - 1}, val {row['val_end'] - row['val_start'] + 1})")
    axis.set_yticks(range(folds.height), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("date_id")
    axis.set_title("walk-forward folds and holdout")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=7, loc="lower left", ncol=4)
    return _save(figure, Path(path))


def plot_bench_scores(rows: Iterable[Mapping], path: str | Path) -> Path:
    """The bench's score table as bars: per source (one panel each), every model's mean score +- std over cells.

    `rows` are mappings with `model`, `mean`, `std` and optionally `source` (`spread.lab.stats.quality_table` rows)."""
    rows = list(rows)
    missing = sorted({key for row in rows for key in ("model", "mean", "std") if key not in row})
    if not rows or missing:
        raise DataError(f"bench score rows: expected model, mean and std in every row (missing {missing or 'rows'})")
    sources = list(dict.fromkeys(str(row.get("source", "")) for row in rows))
    figure = _figure(7 * len(sources), 0.45 * max(sum(str(r.get("source", "")) == s for r in rows) for s in sources)
                     + 1.6)
    axes = figure.subplots(1, len(sources), squeeze=False)[0]
    for axis, source in zip(axes, sources):
        part = [row for row in rows if str(row.get("source", "")) == source]
        names = [str(row["model"]) for row in part][::-1]
        means = np.asarray([row["mean"] for row in part], dtype=float)[::-1]
        stds = np.asarray([row["std"] for row in part], dtype=float)[::-1]
        axis.barh(names, means, xerr=np.nan_to_num(stds), capsize=3, color="C0", alpha=0.85)
        for y, mean in enumerate(means):
            if np.isfinite(mean):
                axis.annotate(f"{mean:.3f}", (mean, y), xytext=(4, 6), textcoords="offset points", fontsize=7)
        axis.axvline(0, color="0.5", linewidth=0.8)
        axis.set_xlabel("competition score, mean +- std over cells")
        axis.set_title(source or "scores")
        axis.grid(axis="x", alpha=0.3)
    return _save(figure, Path(path))


RUN_PLOTS: dict[str, Callable[[Path, Path], Path]] = {
    "training.png": plot_training, "lag_ic.png": plot_lag_ic, "gates.png": plot_gates, "folds.png": plot_folds,
}


def write_run_plots(run_dir: str | Path) -> list[Path]:
    """Draw every picture of RUN into RUN/plots/; returns the files written.

    Never raises for a missing or unreadable input: that picture is skipped with a log line (a run without gates
    or folds still gets the others). Call it after the manifest is written: the pictures are not artefacts the
    predictor checks, so redrawing them never invalidates a run folder."""
    run_dir = Path(run_dir)
    written = []
    for name, draw in RUN_PLOTS.items():
        try:
            written.append(draw(run_dir, run_dir / PLOTS_DIR / name))
        except FileNotFoundError as exc:
            log.info("plot %s skipped: %s", name, exc)
        except DataError as exc:
            log.warning("plot %s skipped: %s", name, exc)
    return written
