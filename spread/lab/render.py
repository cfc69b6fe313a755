"""The bench report's markdown: per source the honest quality table, its headline and the per-fold honest scores,
the score picture, the speed table, the Levers section (bench/LEVERS.md verbatim, when present), the whole
RESULTS.md.

Every score shown is honest (see `spread.lab.stats`): a Transformer's walk-forward fold at the epoch count the
other folds choose and its holdout at a fixed epoch count from the walk-forward folds, never an epoch picked on
the dates scored; baselines and peers choose no epoch, so their fold scores are honest as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from spread.lab.grid import MITSUI, REAL, SYNTHETIC, BenchConfig
from spread.lab.stats import PEERS, TRANSFORMERS

SOURCE_TITLES = {
    SYNTHETIC: "synthetic `realistic` preset, the default (557 features, 424 targets; asynchronous closes, "
               "regime-switching drifts, signal a linear model cannot fully capture; oracle = the generator's true "
               "expectation)",
    MITSUI: "synthetic `mitsui` preset (557 features, 424 targets; signal linear in FX momentum; oracle = the "
            "generator's true expectation)",
    REAL: "real daily prices (skfolio: 20 S&P 500 stocks, the index and 5 factor ETFs, 2000-2022; 104 targets)",
}
LEVERS_FILE = "LEVERS.md"
"""Measurements of the Transformer's levers, written beside RESULTS.md by another tool; included verbatim."""


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def plus_minus(mean: float, std: float) -> str:
    return "—" if not np.isfinite(mean) else f"{mean:.3f} ± {_number(std)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_quality(table: pl.DataFrame, source: str, notes: dict[str, str] | None = None) -> str:
    """The markdown table of one source; `notes` maps a model to a remark shown in its last column."""
    notes = notes or {}
    rows = []
    for row in table.filter(pl.col("source") == source).iter_rows(named=True):
        is_best = row["model"] == row["best_peer"]
        difference = "(best peer)" if is_best else plus_minus(row["diff_mean"], row["diff_std"])
        fraction = row["oracle_fraction"]
        of_oracle = "—" if not np.isfinite(fraction) else f"{100 * fraction:.0f}%"
        gain = row["epoch_pick_gain"]
        rows.append([
            f"`{row['model']}`", str(row["cells"]), plus_minus(row["mean"], row["std"]), difference,
            row["wins"] or "—", of_oracle, "—" if not np.isfinite(gain) else f"{gain:+.3f}",
            notes.get(row["model"], ""),
        ])
    header = ["model", "cells", "honest score mean ± std", "paired Δ vs best peer", "cells won", "of oracle",
              "best-epoch optimism", "notes"]
    return markdown_table(header, rows)


def render_folds(folds: pl.DataFrame, source: str) -> str:
    """Per model (rows) and fold (columns) of one source: the honest score, mean ± std over seeds when several."""
    part = folds.filter(pl.col("source") == source)
    names = part["fold"].unique(maintain_order=True).to_list()
    rows = []
    for model in part["model"].unique(maintain_order=True).to_list():
        cells = {row["fold"]: row for row in part.filter(pl.col("model") == model).iter_rows(named=True)}
        line = [f"`{model}`"]
        for fold in names:
            cell = cells.get(fold)
            if cell is None or cell["mean"] is None:
                line.append("—")
            else:
                line.append(f"{cell['mean']:.3f}" if cell["n"] == 1 else f"{cell['mean']:.3f} ± {cell['std']:.3f}")
        rows.append(line)
    return markdown_table(["model", *names], rows)


def headline(table: pl.DataFrame, source: str) -> str:
    """One sentence per Transformer row: its paired difference to the best peer, whether that margin is larger than
    its spread, and its share of the oracle beside the best peer's."""
    on_source = table.filter(pl.col("source") == source)
    peer = on_source.filter(pl.col("model") == pl.col("best_peer"))
    peer_fraction = peer["oracle_fraction"][0] if peer.height else float("nan")
    sentences = []
    for row in on_source.filter(pl.col("model").is_in(list(TRANSFORMERS))).iter_rows(named=True):
        if not np.isfinite(row["diff_mean"]):
            continue
        difference = round(row["diff_mean"], 3)
        verdict = "beats" if difference > 0 else "trails" if difference < 0 else "ties with"
        spread = "larger than" if abs(row["diff_mean"]) > row["diff_std"] else "within"
        text = (f"`{row['model']}` {verdict} the best peer `{row['best_peer']}`: paired difference "
                f"{difference:+.3f} ± {_number(row['diff_std'])} ({row['wins']} cells won; the margin is {spread} "
                f"its spread)")
        if np.isfinite(row["oracle_fraction"]):
            text += f" and reaches {100 * row['oracle_fraction']:.0f}% of the oracle"
            if np.isfinite(peer_fraction):
                text += f" (the best peer {100 * peer_fraction:.0f}%)"
        sentences.append(text + ".")
    return " ".join(sentences)


def read_levers(bench_dir: str | Path) -> str | None:
    """The text of `bench_dir`/LEVERS.md, or None when there is none."""
    path = Path(bench_dir) / LEVERS_FILE
    return path.read_text() if path.is_file() else None


def render_speed(speed: list[tuple[str, str, str]]) -> str:
    """The speed table from (measure, value, setting) rows."""
    return markdown_table(["measure", "value", "setting"], [list(row) for row in speed])


def render_report(
    bench_cfg: BenchConfig, info: dict[str, str], table: pl.DataFrame, folds: pl.DataFrame,
    speed: list[tuple[str, str, str]], notes: dict[str, str], remarks: list[str], figure: str | None = None,
    levers: str | None = None,
) -> str:
    """The whole RESULTS.md text; `figure` is the score picture's link (relative to RESULTS.md), `levers` the text
    of bench/LEVERS.md, included verbatim as the Levers section."""
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{info['command']}` ({bench_cfg.mode} mode) on {info['date']}; every number below comes from",
        "that command (finished run folders in its work folder are reused when their config is unchanged).",
        "",
        f"- machine: {info['machine']}",
        f"- versions: {info['versions']}",
        f"- code: {info['code']}",
        f"- grid: data seeds {bench_cfg.data_seeds}, training seeds {bench_cfg.train_seeds}, "
        f"{bench_cfg.n_folds} walk-forward folds + the holdout per data seed",
    ]
    if bench_cfg.transformer_overrides:
        lines.append(f"- Transformer overrides in this mode: `{' '.join(bench_cfg.transformer_overrides)}` "
                     "(transformer_default is `configs/default.yaml` at its own shape and budget)")
    if bench_cfg.tune_overrides != bench_cfg.transformer_overrides:
        lines.append(f"- the tuning study starts from the built-in defaults with `{' '.join(bench_cfg.tune_overrides)}`")
    lines += [f"- {remark}" for remark in remarks]
    peers = ", ".join(f"`{name}`" for name in PEERS)
    lines += [
        "",
        "## Quality: honest competition score (rank-correlation Sharpe) per fold",
        "",
        "Every score is honest: nothing chose it on the dates it scores. A Transformer's walk-forward fold counts "
        "with its `honest_score` (summary.json: the score at the epoch count chosen by the *other* walk-forward "
        "folds), never with the best epoch picked on the fold being scored; its holdout trains a fixed epoch count "
        "chosen from the walk-forward folds. Baselines and peers choose no epoch (their hyper-parameters come from "
        "an inner split of the training dates), so their fold scores are honest as they are.",
        "",
        "A cell is one (data seed, training seed, fold). mean ± std: population std over cells. Paired Δ: model "
        f"minus the best peer on the same data seed and fold, mean ± population std over cells. The best peer is "
        f"the one of {peers} with the highest mean on that source: what a competitor would otherwise submit, "
        "chosen on the scored cells themselves (which flatters the peer, not the Transformer); `last_label` is a "
        "diagnostic (its sign says momentum or reversal in the spreads), not a peer. Cells won: Δ > 0. Of "
        "oracle: the model's mean score over the oracle's mean on the same cells. Best-epoch optimism: the mean "
        "of best-epoch minus honest score on the walk-forward folds, what picking the epoch on the scored fold "
        "would have added (not counted anywhere).",
    ]
    if figure:
        lines += ["", f"![honest scores, mean ± std over cells]({figure})"]
    for source in table["source"].unique(maintain_order=True).to_list():
        lines += ["", f"### {source}: {SOURCE_TITLES.get(source, source)}", "", render_quality(table, source, notes)]
        summary = headline(table, source)
        if summary:
            lines += ["", summary]
        lines += ["", "Honest score per fold (mean ± std over training seeds and data seeds where several):", "",
                  render_folds(folds, source)]
    lines += ["", "## Speed", "", render_speed(speed), ""]
    if levers is not None:
        lines += ["## Levers", "", f"`bench/{LEVERS_FILE}`, included verbatim:", "", levers.rstrip("\n"), ""]
    return "\n".join(lines)
