"""The bench's speed rows, measured by the bench/ scripts run as child processes so that their thread and memory
settings hold (bench_data.py, bench_train.py, bench_infer.py), plus the end-to-end training throughput read from
the scored Transformer run folders (epoch wall time, validation included).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from spread.lab import REPO_ROOT
from spread.lab.grid import SYNTHETIC, SYNTHETIC_PRESETS, BenchConfig

log = logging.getLogger(__name__)


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
    setting = (f"synthetic {SYNTHETIC_PRESETS[SYNTHETIC]}, L={numbers.get('window')}, {numbers.get('dates')} dates x "
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
    """bench/bench_train.py: samples/s of the training step for the default config (and the shape the mode's tuning
    study starts from, when it differs)."""
    default = REPO_ROOT / "configs" / "default.yaml"
    if not default.is_file():
        return []
    rows = []
    variants = {"default config": []}
    if bench_cfg.tune_overrides != bench_cfg.transformer_overrides:
        variants[f"{bench_cfg.mode} tuning shape"] = bench_cfg.tune_overrides
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
