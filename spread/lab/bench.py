"""`python -m spread bench`: the benchmark report bench/RESULTS.md (honest quality against peers, speed, provenance).

Quality. On the synthetic `realistic` preset (the default; the generator's oracle gives a reference; full mode adds
the older `mitsui` preset, whose signal is linear) and the real daily price panel shipped with skfolio
(`spread.lab.realdata`, data nobody tuned on), every model is scored on the same folds (at least two walk-forward
folds plus the competition-like holdout, `spread.splits`) with the competition score: every baseline and peer of
`spread.lab.baselines` (lightgbm when installed) and the Transformer with the default and with the tuned config.
Every score is honest (`spread.lab.stats`): a Transformer's walk-forward fold counts with its `honest_score` (the
epoch count chosen by the other folds), never the best epoch picked on the fold being scored; its holdout is a
fixed-length fit whose epoch count the walk-forward folds chose; baselines and peers choose no epoch, so their
fold scores are honest as they are. A cell is (data seed, training seed, fold); the baselines do not depend on the
training seed, so each Transformer cell is paired with the best peer's score on the same data seed and fold (the
best peer: the highest mean among `spread.lab.stats.PEERS`). The table gives, per model, the mean +- population
std over cells, the paired difference to the best peer with its std and the number of cells won, on synthetic
data the fraction of the oracle's mean score reached on the same cells, and the per-fold honest scores; the same
table is drawn with error bars into bench/scores.png (`spread.plots.plot_bench_scores`), linked from the report.
A bench/LEVERS.md beside the report (the Transformer's lever measurements) is included verbatim as its Levers
section.

Tuning. The tuned config is `configs/tuned.yaml` when it exists (from `python -m spread tune`); otherwise the bench
tunes first (`spread.lab.tune`) on a separate synthetic draw (data seed `TUNE_DATA_SEED`, never one of the scored
seeds) so that no scored data chose a hyper-parameter.

Speed. Measured by the bench scripts, run as child processes so that their thread and memory settings hold:
bench/bench_data.py (feature panel and fold build seconds, peak memory as a ratio to the raw panel, loader
throughput), bench/bench_train.py (samples/s of one optimiser step of the default config, and of the mode's
overrides, on the device the trainer would choose) and bench/bench_infer.py (the predictor of the first synthetic
Transformer run: latency p50 / p99 after the first call and resident-memory growth over `latency_calls` calls,
continuing past the test period like the forecasting phase). The Transformer runs above also give an end-to-end
throughput (epoch wall time, validation included).

Quick mode (default) keeps the whole run near 20 minutes on 2 CPU cores: one data seed, three training seeds, four
walk-forward folds plus the holdout, `configs/default.yaml` as shipped (its short budget is the one the README's
main job trains) and a tuned config searched at a small shape and a short budget (`QUICK`, stated in the report). `--full` runs the real grid (`FULL`: 3 data seeds x 6 walk-forward folds + holdout x 3 training seeds, the
`mitsui` preset too); it is meant for a GPU. Every run folder is kept under the work folder and reused when its
config is unchanged (the bench's tuning study when its settings are), so an interrupted bench resumes; `scores.csv`
there holds every cell.

This module only orchestrates: `spread.lab.grid` runs and caches the scored runs, `spread.lab.stats` makes the
quality table, `spread.lab.speed` runs the bench/ scripts, `spread.lab.provenance` describes the machine and code,
and `spread.lab.render` writes the markdown.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import polars as pl

from spread.lab.grid import FULL, QUICK, REAL, SYNTHETIC, RunTally, bench_split, run_source, tuned_config_path
from spread.lab.provenance import provenance
from spread.lab.render import read_levers, render_report
from spread.lab.speed import data_build_speed, predict_speed, train_step_speed, training_speed
from spread.lab.stats import SCORE_SCHEMA, fold_scores, quality_table
from spread.plots import plot_bench_scores
from spread.runfolder import check_output_file

log = logging.getLogger(__name__)

SCORES_PICTURE = "scores.png"
"""The score table's picture, written beside the report."""


def bench(
    full: bool = False,
    out_md: str | Path = "bench/RESULTS.md",
    workdir: str | Path = "bench/out/report",
    command: str | None = None,
) -> Path:
    """Run the benchmark grid (quick by default) and write the report to `out_md`; returns its path."""
    from spread.config import load_config

    bench_cfg = FULL if full else QUICK
    command = command or "python -m spread bench" + (" --full" if full else "")
    check_output_file(Path(out_md), "--out")  # now, not after the grid's minutes of runs
    work = Path(workdir) / bench_cfg.mode
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tally = RunTally()
    info = provenance(command)
    remarks = []
    load_config(None, [*bench_cfg.transformer_overrides, *bench_cfg.tune_overrides])  # fail fast on a bad override
    tuned, tuned_remark = tuned_config_path(bench_cfg, work, bench_split(bench_cfg))
    notes = {"transformer_tuned": tuned_remark, "oracle": "reference, not a model"}
    notes["transformer_default"] = "`configs/default.yaml` as shipped, without the final fit"
    if bench_cfg.mode == "quick":
        notes["transformer_tuned"] = f"{tuned_remark}; the study's quick shape and budget"

    sources = list(bench_cfg.sources)
    if REAL in sources and importlib.util.find_spec("skfolio") is None:
        sources.remove(REAL)
        remarks.append("real panel skipped: skfolio is not installed (pip install -r requirements-bench.txt)")
    cells, runs = [], {}
    for source in sources:
        source_cells, source_runs = run_source(source, bench_cfg, work, tuned, tally)
        cells += source_cells
        runs |= source_runs
    scores = pl.DataFrame(cells, schema=SCORE_SCHEMA, orient="row")
    scores.write_csv(work / "scores.csv")
    table = quality_table(scores)

    first_seed = bench_cfg.data_seeds[0]
    synthetic_data = work / "data" / f"{SYNTHETIC}-s{first_seed}"
    speed = data_build_speed(synthetic_data, bench_cfg, work)
    speed += train_step_speed(bench_cfg, work)
    speed += training_speed(runs)
    latency_run = runs[f"{SYNTHETIC}/transformer_default/s{first_seed}/t{bench_cfg.train_seeds[0]}"]
    speed += predict_speed(latency_run, synthetic_data, bench_cfg, work)
    minutes = (time.perf_counter() - started) / 60
    remarks.append(
        f"{tally.runs} scored runs taking {tally.seconds / 60:.1f} min of compute in all ({tally.reused} reused from "
        f"an earlier invocation in the work folder); wall time of this invocation {minutes:.1f} min"
    )

    out = Path(out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_bench_scores(table.iter_rows(named=True), out.parent / SCORES_PICTURE)
    out.write_text(render_report(bench_cfg, info, table, fold_scores(scores), speed, notes, remarks,
                                 figure=SCORES_PICTURE, levers=read_levers(out.parent)))
    log.info("wrote %s", out)
    return out
