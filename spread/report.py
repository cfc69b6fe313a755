"""`python -m spread bench`: the benchmark report bench/RESULTS.md (quality against baselines, speed, provenance).

Quality. On two sources, the synthetic `mitsui` preset (where the generator's oracle gives a ceiling) and the real
daily price panel shipped with skfolio (`spread.realdata`, data nobody tuned on), every model is scored on the same
folds (walk-forward folds plus the competition-like holdout, `spread.splits`) with the competition score:
the baselines and peers (`spread.baselines`; lightgbm when installed), the Transformer with the default config
and with the tuned config. A
cell is (data seed, training seed, fold); the baselines do not depend on the training seed, so each Transformer
cell is paired with the best baseline's score on the same data seed and fold. The table gives, per model, the
mean +- population std of the score over cells, the paired difference to the best baseline (the baseline with the
highest mean on that source) with its std and the number of cells won, and on synthetic data the fraction of the
oracle's mean score reached on the same dates.

Tuning. The tuned config is `configs/tuned.yaml` when it exists (from `python -m spread tune`); otherwise the bench
tunes first (`spread.tune`) on a separate synthetic draw (data seed `TUNE_DATA_SEED`, never one of the scored
seeds) so that no scored data chose a hyper-parameter.

Speed. Measured by the bench scripts, run as child processes so that their thread and memory settings hold:
bench/bench_data.py (feature panel and fold build seconds, peak memory as a ratio to the raw panel, loader
throughput), bench/bench_train.py (samples/s of one optimiser step of the default config, and of the mode's
overrides, on the device the trainer would choose) and bench/bench_infer.py (the predictor of the first synthetic
Transformer run: latency p50 / p99 after the first call and resident-memory growth over `latency_calls` calls,
continuing past the test period like the forecasting phase). The Transformer runs above also give an end-to-end
throughput (epoch wall time, validation included).

Quick mode (default) keeps the whole run near 10-15 minutes on 2 CPU cores: one data seed, two walk-forward folds
plus the holdout, and every Transformer config forced to a small shape and a short budget (`QUICK`, stated in the
report; "tuned" then differs from "default" only in learning rate, loss weights and gate lambda). `--full` runs the
real grid (`FULL`); it is meant for a GPU. Every run folder is kept under the work folder and reused when its
config is unchanged (the bench's tuning study when its settings are), so an interrupted bench resumes; `scores.csv`
there holds every cell.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

BASELINE_NAMES = ("mean_rank", "last_label", "ridge", "reduced_rank", "regularised_prior", "lightgbm")
ORACLE = "oracle"
TRANSFORMERS = ("transformer_default", "transformer_tuned")
SYNTHETIC, REAL = "synthetic", "real"
SOURCE_TITLES = {
    SYNTHETIC: "synthetic `mitsui` preset (557 features, 424 targets; oracle = the generator's true expectation)",
    REAL: "real daily prices (skfolio: 20 S&P 500 stocks, the index and 5 factor ETFs, 2000-2022; 104 targets)",
}
TUNE_DATA_SEED = 100
"""Synthetic data seed the bench tunes on when no configs/tuned.yaml exists (never a scored seed)."""
TUNED_CONFIG = Path("configs/tuned.yaml")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    """What one bench mode runs."""

    mode: str
    """"quick" or "full" (named in the report)."""
    data_seeds: list[int]
    """Seeds of the competitions built per source (synthetic draw; real: the pair draw)."""
    train_seeds: list[int]
    """Config seeds of the Transformer runs (weights, shuffling) per data seed."""
    n_folds: int
    """Walk-forward folds before the holdout (split.n_folds)."""
    transformer_overrides: list[str] = field(default_factory=list)
    """Dotted overrides applied to both Transformer configs (the quick budget); empty = the configs as they are."""
    tune_trials: int = 30
    """Trials of the tuning study run when no configs/tuned.yaml exists."""
    tune_space_overrides: dict = field(default_factory=dict)
    """`SearchSpace` fields replaced for that study (quick: the shape fixed to the forced one)."""
    latency_calls: int = 300
    """Predict calls served to measure latency and memory growth."""
    data_bench_batches: int = 150
    """DataLoader batches timed by bench/bench_data.py."""


QUICK_SHAPE = ["data.window=64", "model.d_model=64", "model.n_layers=2", "model.n_heads=4"]
QUICK = BenchConfig(
    mode="quick", data_seeds=[0], train_seeds=[0, 1, 2], n_folds=2,
    transformer_overrides=[*QUICK_SHAPE, "train.epochs=4", "train.max_steps_per_epoch=40", "train.progress=false"],
    tune_trials=4, tune_space_overrides={"windows": [64], "d_models": [64], "heads": [4], "layers": (2, 2)},
    data_bench_batches=40,
)
FULL = BenchConfig(
    mode="full", data_seeds=[0, 1, 2], train_seeds=[0, 1, 2], n_folds=3,
    transformer_overrides=["train.progress=false"],
)


# ----------------------------------------------------------------------------------------------------------------
# tables (pure functions of the score cells)

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


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _plus_minus(mean: float, std: float) -> str:
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
        is_best = row["model"] == row["best_baseline"]
        difference = "(best baseline)" if is_best else _plus_minus(row["diff_mean"], row["diff_std"])
        fraction = row["oracle_fraction"]
        of_oracle = "—" if not np.isfinite(fraction) else f"{100 * fraction:.0f}%"
        rows.append([
            f"`{row['model']}`", str(row["cells"]), _plus_minus(row["mean"], row["std"]), difference,
            row["wins"] or "—", of_oracle, notes.get(row["model"], ""),
        ])
    header = ["model", "cells", "score mean ± std", "paired Δ vs best baseline", "cells won", "of oracle", "notes"]
    return markdown_table(header, rows)


def headline(table: pl.DataFrame, source: str) -> str:
    """One sentence per Transformer row: its paired difference to the best baseline and its share of the oracle."""
    sentences = []
    for row in table.filter((pl.col("source") == source) & pl.col("model").is_in(list(TRANSFORMERS))).iter_rows(
        named=True
    ):
        if not np.isfinite(row["diff_mean"]):
            continue
        difference = round(row["diff_mean"], 3)
        verdict = "beats" if difference > 0 else "trails" if difference < 0 else "ties with"
        text = (f"`{row['model']}` {verdict} the best baseline `{row['best_baseline']}`: paired difference "
                f"{difference:+.3f} ± {_number(row['diff_std'])} ({row['wins']} cells won)")
        if np.isfinite(row["oracle_fraction"]):
            text += f" and reaches {100 * row['oracle_fraction']:.0f}% of the oracle"
        sentences.append(text + ".")
    return " ".join(sentences)


def render_speed(speed: list[tuple[str, str, str]]) -> str:
    """The speed table from (measure, value, setting) rows."""
    return markdown_table(["measure", "value", "setting"], [list(row) for row in speed])


# ----------------------------------------------------------------------------------------------------------------
# provenance


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def provenance(command: str) -> dict[str, str]:
    """Machine, versions, code revision and command, for the report's header."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain"):
        commit += " (with uncommitted changes)"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    from spread import __version__

    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("torch", "numpy", "polars", "scipy", "optuna", "skfolio")
    )
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_model()}, {cores} cores, {_memory_gib()} RAM, "
                   f"GPU: {gpu}; load average at the start {load} (1/5/15 min; above the core count = other jobs)",
        "versions": f"python {platform.python_version()}, spread {__version__}, {versions}",
        "code": f"git {commit}",
    }


# ----------------------------------------------------------------------------------------------------------------
# running the grid


def _apply(cfg, overrides: list[str]):
    from spread.config import apply_overrides, config_from_dict, config_to_dict

    return config_from_dict(apply_overrides(config_to_dict(cfg), overrides))


def _same_config(run_dir: Path, cfg) -> bool:
    from spread.config import config_to_dict, read_config_file

    saved = run_dir / "config.yaml"
    return saved.is_file() and read_config_file(saved) == config_to_dict(cfg)


RUNS: list[tuple[Path, bool, float]] = []
"""(run folder, reused?, its own compute seconds) of every `cached_run` in this process (summed in the report)."""


def cached_run(run_dir: Path, cfg, execute: Callable[[], dict]) -> dict:
    """summary.json of `run_dir` when it was finished with the same config; otherwise (re)run it from scratch."""
    summary_path = run_dir / "summary.json"
    reused = summary_path.is_file() and _same_config(run_dir, cfg)
    if reused:
        log.info("reusing %s", run_dir)
        summary = json.loads(summary_path.read_text())
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        summary = execute()
    seconds = float((summary.get("run") or {}).get("seconds") or 0.0)
    log.info("%s: %.0f s%s", run_dir, seconds, " (reused)" if reused else "")
    RUNS.append((run_dir, reused, seconds))
    return summary


def bench_split(bench_cfg: BenchConfig) -> list[str]:
    """The split overrides every model of the bench shares, so that all are scored on the same folds."""
    return [f"split.n_folds={bench_cfg.n_folds}", "split.holdout=true"]


def build_source(source: str, out: Path, seed: int) -> Path:
    """The competition folder of `source` for `seed` (deterministic, rewritten every time)."""
    if source == SYNTHETIC:
        from spread.synth import generate

        return generate(out, seed=seed, preset="mitsui", overwrite=True)
    from spread.realdata import realdata

    return realdata(out, seed=seed, overwrite=True)


def tuned_config_path(bench_cfg: BenchConfig, work: Path, base_overrides: list[str]) -> tuple[Path, str]:
    """configs/tuned.yaml when present, else the result of a tuning study run now; with a remark for the report."""
    tuned = REPO_ROOT / TUNED_CONFIG
    if tuned.is_file():
        return tuned, f"`{TUNED_CONFIG}`"
    from spread.config import load_config
    from spread.tune import SearchSpace, tune

    data = build_source(SYNTHETIC, work / "data" / f"tune-s{TUNE_DATA_SEED}", TUNE_DATA_SEED)
    overrides = base_overrides + bench_cfg.transformer_overrides
    # A finished study is reused only for the same settings: its folder is named by them.
    settings = json.dumps([overrides, bench_cfg.tune_trials, bench_cfg.tune_space_overrides], sort_keys=True)
    study_dir = work / f"tune-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    out = study_dir / "tuned.yaml"
    if not out.is_file():
        space = SearchSpace(**bench_cfg.tune_space_overrides)
        result = tune(load_config(None, overrides), data, study_dir, bench_cfg.tune_trials,
                      study_name=f"bench-{bench_cfg.mode}", write_config=out, space=space, seed=0)
        log.info("bench tuning: best walk-forward score %.4f (trial %d)", result["best_value"], result["best_trial"])
    result = json.loads((study_dir / "tune_summary.json").read_text())
    remark = (f"tuned by this bench: {result['n_trials']} Optuna trials on synthetic data seed {TUNE_DATA_SEED} "
              f"(not a scored seed), best mean walk-forward score {result['best_value']:.3f}")
    return out, remark


def run_source(source: str, bench_cfg: BenchConfig, work: Path, tuned: Path) -> tuple[list[dict], dict[str, Path]]:
    """Score every model on every data seed of `source`; returns the cells and the run folders by model and seeds."""
    from spread.baselines import run_baseline
    from spread.config import load_config
    from spread.trainer import train

    split = bench_split(bench_cfg)
    cells, runs = [], {}
    for data_seed in bench_cfg.data_seeds:
        data = build_source(source, work / "data" / f"{source}-s{data_seed}", data_seed)
        run_root = work / "runs" / f"{source}-s{data_seed}"
        baseline_cfg = load_config(None, split)
        names = [name for name in BASELINE_NAMES if name != "lightgbm" or importlib.util.find_spec("lightgbm")]
        names += [ORACLE] if source == SYNTHETIC else []
        for name in names:
            run_dir = run_root / name
            summary = cached_run(run_dir, baseline_cfg, lambda: run_baseline(name, baseline_cfg, data, run_dir))
            cells += summary_cells(summary, source, name, data_seed, None)
        for model, config_file in (("transformer_default", None), ("transformer_tuned", tuned)):
            for train_seed in bench_cfg.train_seeds:
                cfg = load_config(config_file, [*bench_cfg.transformer_overrides, *split, f"seed={train_seed}"])
                run_dir = run_root / f"{model}-t{train_seed}"
                summary = cached_run(run_dir, cfg, lambda: train(cfg, data, run_dir))
                cells += summary_cells(summary, source, model, data_seed, train_seed)
                runs[f"{source}/{model}/s{data_seed}/t{train_seed}"] = run_dir
    return cells, runs


# ----------------------------------------------------------------------------------------------------------------
# speed


def run_script(script: str, args: list[str], out: Path) -> str | None:
    """Run bench/<script> as a child process (its own thread and memory settings) writing `out`; its text or None."""
    path = REPO_ROOT / "bench" / script
    if not path.is_file():
        log.warning("%s is missing: its speed rows are left out", path)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0 or not out.is_file():
        log.warning("%s failed (exit %d): %s", script, done.returncode, done.stderr[-2000:])
        return None
    return out.read_text()


def _get(numbers: dict, key: str, form: str) -> str:
    value = numbers.get(key)
    return "—" if value is None else format(value, form)


def data_build_speed(data_dir: Path, bench_cfg: BenchConfig, work: Path) -> list[tuple[str, str, str]]:
    """bench/bench_data.py on the scored synthetic folder at the default window."""
    out = work / "speed" / "bench_data.json"
    text = run_script("bench_data.py", ["--competition", str(data_dir), "--json", str(out),
                                        "--batches", str(bench_cfg.data_bench_batches)], out)
    if text is None:
        return [("data build", "not measured", "bench/bench_data.py missing or failed (see the log)")]
    numbers = json.loads(text)
    setting = (f"synthetic mitsui, L={numbers.get('window')}, {numbers.get('dates')} dates x "
               f"{numbers.get('raw_columns')} raw columns -> {numbers.get('kept_features')} features; bench_data.py")
    loaders = {key: value for key, value in numbers.items() if key.startswith("batches_per_s")}
    rows = [
        ("data build: feature panel", f"{_get(numbers, 'panel_seconds', '.2f')} s", setting),
        ("data build: holdout fold (screen, scale, windows)", f"{_get(numbers, 'fold_seconds', '.2f')} s", setting),
        ("data build: peak memory / raw panel", f"{_get(numbers, 'peak_memory_ratio', '.2f')}x",
         f"raw panel {_get(numbers, 'raw_panel_mb', '.0f')} MB; target < 3x"),
    ]
    if loaders:
        best = max(loaders, key=loaders.get)
        rows.append(("data loading: training batches/s (best setting)", f"{loaders[best]:.0f}", best))
    return rows


def train_step_speed(bench_cfg: BenchConfig, work: Path) -> list[tuple[str, str, str]]:
    """bench/bench_train.py: samples/s of the training step for the default config (and the mode's overrides)."""
    default = REPO_ROOT / "configs" / "default.yaml"
    if not default.is_file():
        return []
    rows = []
    variants = {"default config": []}
    if bench_cfg.transformer_overrides:
        variants[f"{bench_cfg.mode} config"] = bench_cfg.transformer_overrides
    for label, overrides in variants.items():
        out = work / "speed" / f"bench_train-{label.split()[0]}.jsonl"
        text = run_script("bench_train.py", ["--config", str(default), "--steps", "5", "--warmup", "2",
                                             "--out", str(out), *overrides], out)
        if text is None:
            rows.append((f"train step: {label}", "not measured", "bench/bench_train.py missing or failed"))
            continue
        numbers = json.loads(text.splitlines()[0])
        rows.append((
            f"train samples/s: {label} (one optimiser step)", _get(numbers, "samples_per_s", ".0f"),
            f"{numbers.get('device')} {numbers.get('precision')}, L={numbers.get('window')}, batch "
            f"{numbers.get('batch')}, {numbers.get('parameters')} parameters, {numbers.get('features')} features; "
            f"{_get(numbers, 'ms_per_step', '.0f')} ms/step; bench_train.py",
        ))
    return rows


def training_speed(runs: dict[str, Path]) -> list[tuple[str, str, str]]:
    """Samples per second of the Transformer runs (epoch wall time, validation included), per source and model."""
    from spread.config import read_config_file

    groups: dict[str, list[Path]] = {}
    for key, run_dir in runs.items():
        source, model = key.split("/")[:2]
        groups.setdefault(f"{source}/{model}", []).append(run_dir)
    rows = []
    for group, run_dirs in groups.items():
        samples = seconds = 0.0
        device = precision = "?"
        for run_dir in run_dirs:
            summary = json.loads((run_dir / "summary.json").read_text())
            device, precision = summary["run"]["device"], summary["run"]["precision"]
            batch = read_config_file(run_dir / "config.yaml")["data"]["batch_size"]
            metrics = pl.read_csv(run_dir / "metrics.csv")
            for fold_rows in metrics.partition_by("fold"):
                steps = np.diff(np.concatenate([[0], fold_rows["step"].to_numpy()]))
                samples += float(steps.sum()) * batch
                seconds += float(fold_rows["seconds"].sum())
        source, model = group.split("/")
        rows.append((f"train samples/s: {source}, {model} runs", f"{samples / seconds:.0f}" if seconds else "—",
                     f"{device} {precision}; {len(run_dirs)} runs, epoch wall time incl. validation"))
    return rows


def predict_speed(run_dir: Path, data_dir: Path, bench_cfg: BenchConfig, work: Path) -> list[tuple[str, str, str]]:
    """bench/bench_infer.py: latency and resident-memory growth of the predictor over `latency_calls` calls."""
    out = work / "speed" / "bench_infer.json"
    text = run_script("bench_infer.py", ["--run", str(run_dir), "--data", str(data_dir),
                                         "--calls", str(bench_cfg.latency_calls), "--out", str(out)], out)
    if text is None:
        return [("predict latency", "not measured", "bench/bench_infer.py missing or failed (see the log)")]
    numbers = json.loads(text)
    setting = (f"{numbers.get('calls')} calls on {numbers.get('threads')} threads, run {run_dir.parent.name}/"
               f"{run_dir.name}; first call {_get(numbers, 'first_s', '.1f')} s; "
               f"{numbers.get('fallback_calls')} fallbacks; bench_infer.py")
    return [
        ("predict latency p50 / p99 (after the first call)",
         f"{_get(numbers, 'p50_ms', '.0f')} / {_get(numbers, 'p99_ms', '.0f')} ms", setting),
        ("predict memory growth", f"{_get(numbers, 'rss_growth_mb', '+.1f')} MB",
         f"resident set after the first -> after call {numbers.get('calls')}; target < 50 MB"),
    ]


# ----------------------------------------------------------------------------------------------------------------
# the report


def render_report(
    bench_cfg: BenchConfig, info: dict[str, str], table: pl.DataFrame, speed: list[tuple[str, str, str]],
    notes: dict[str, str], remarks: list[str],
) -> str:
    """The whole RESULTS.md text."""
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
        lines.append(f"- Transformer overrides in this mode: `{' '.join(bench_cfg.transformer_overrides)}`")
    lines += [f"- {remark}" for remark in remarks]
    lines += [
        "",
        "## Quality: competition score (rank-correlation Sharpe) per fold",
        "",
        "A cell is one (data seed, training seed, fold). mean ± std: population std over cells. Paired Δ: model "
        "minus the best baseline (highest mean on that source) on the same data seed and fold, mean ± std over "
        "cells; cells won: Δ > 0. Of oracle: the model's mean score over the oracle's mean on the same dates.",
    ]
    for source in table["source"].unique(maintain_order=True).to_list():
        lines += ["", f"### {source}: {SOURCE_TITLES.get(source, source)}", "", render_quality(table, source, notes)]
        summary = headline(table, source)
        if summary:
            lines += ["", summary]
    lines += ["", "## Speed", "", render_speed(speed), ""]
    return "\n".join(lines)


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
    work = Path(workdir) / bench_cfg.mode
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    RUNS.clear()
    info = provenance(command)
    remarks = []
    load_config(None, bench_cfg.transformer_overrides)  # fail fast on a bad override
    tuned, tuned_remark = tuned_config_path(bench_cfg, work, bench_split(bench_cfg))
    notes = {"transformer_tuned": tuned_remark, "oracle": "reference, not a model"}
    if bench_cfg.mode == "quick":
        notes["transformer_default"] = "quick shape and budget (overrides above)"
        notes["transformer_tuned"] = f"{tuned_remark}; quick shape and budget (overrides above)"

    sources = [SYNTHETIC]
    if importlib.util.find_spec("skfolio") is not None:
        sources.append(REAL)
    else:
        remarks.append("real panel skipped: skfolio is not installed (pip install -r requirements-bench.txt)")
    cells, runs = [], {}
    for source in sources:
        source_cells, source_runs = run_source(source, bench_cfg, work, tuned)
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
    reused = sum(1 for _, was_reused, _ in RUNS if was_reused)
    compute = sum(seconds for _, _, seconds in RUNS) / 60
    remarks.append(
        f"{len(RUNS)} scored runs taking {compute:.1f} min of compute in all ({reused} reused from an earlier "
        f"invocation in the work folder); wall time of this invocation {minutes:.1f} min"
    )

    out = Path(out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(bench_cfg, info, table, speed, notes, remarks))
    log.info("wrote %s", out)
    return out
