"""Benchmark of the dataset layer on the MITSUI-size synthetic competition (issue 3: features, folds, windows).

    python bench/bench_data.py [--window 192] [--batches 150] [--competition DIR] [--json OUT.json]

Measures, at window L (default 192), in a process pinned to 2 CPU cores:
- seconds to build the feature panel, and to prepare the holdout fold (screen, fit the scaler, fill the window
  tensor), after one warm-up of both;
- peak memory of building the panel and preparing the fold, beyond what was allocated before (the loaded
  competition), as a ratio to the raw panel's size (train.csv as loaded, `Competition.train.estimated_size()`);
  target: under 3x. Two measures, the larger is the reported ratio: the peak of traced allocations (tracemalloc:
  Python objects and every numpy buffer, including the window tensor, which is numpy-backed), and the rise of the
  peak resident set (VmHWM, reset through /proc/self/clear_refs), which also sees polars' own buffers. For the
  latter, glibc's mmap threshold is fixed at 128 KiB so that freed large buffers go back to the system instead of
  staying resident in the heap (with the default, dynamic threshold the resident peak also counts freed
  temporaries from earlier steps), and the synthetic folder is generated in a child process;
- training batches per second served by `make_loader` (shuffled, batch 32) for 1 and 2 torch threads, in process
  and with one worker process. Every batch is a fresh (32, L, F) float32 tensor (about 30 MB at L = 192 with
  ~1300 features), so throughput is bound by memory bandwidth and page faults; on a shared machine it varies a lot.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from spread.competition import Competition, load_competition  # noqa: E402
from spread.features import FeatureConfig  # noqa: E402
from spread.scaling import ScalingConfig  # noqa: E402
from spread.screening import ScreenConfig  # noqa: E402
from spread.splits import Fold, SplitConfig, fold_table, lag_mapping, make_folds  # noqa: E402
from spread.synth import generate  # noqa: E402
from spread.windows import DataConfig, FoldData, competition_panel, make_loader, prepare_fold  # noqa: E402

CORES = 2
MB = 2**20
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LOADER_SETTINGS = ((2, 0), (1, 0), (1, 1))
"""(torch threads, DataLoader workers) pairs whose throughput is measured."""


def memory_kb(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_resident_memory(step) -> int:
    """Peak bytes of resident memory that `step()` adds to what is resident before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    resident = memory_kb("VmRSS")
    step()
    return (memory_kb("VmHWM") - resident) * 1024


def peak_traced_memory(step) -> int:
    """Peak bytes of traced allocations (Python objects, numpy buffers) that `step()` adds."""
    gc.collect()
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def generated_competition(out: Path) -> Competition:
    """The mitsui preset, generated in a child process so that its garbage does not sit in this one's heap."""
    child = multiprocessing.get_context("spawn").Process(target=generate, args=(out,), kwargs={"preset": "mitsui"})
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"generating the synthetic competition failed (exit code {child.exitcode})")
    return load_competition(out)


def build(comp: Competition, fold: Fold, feature_cfg: FeatureConfig, data_cfg: DataConfig) -> tuple[float, float]:
    """(seconds to build the panel, seconds to prepare the fold)."""
    started = time.perf_counter()
    panel = competition_panel(comp, feature_cfg)
    panel_seconds = time.perf_counter() - started
    prepare_fold(comp, fold, feature_cfg, ScreenConfig(), ScalingConfig(), data_cfg, panel=panel)
    return panel_seconds, time.perf_counter() - started - panel_seconds


def batches_per_second(data: FoldData, batch_size: int, n_batches: int, threads: int, workers: int) -> float:
    torch.set_num_threads(threads)
    loader = make_loader(data.train, batch_size, shuffle=True, seed=0, num_workers=workers, drop_last=True)
    served, started = -1, 0.0
    while served < n_batches:
        for _ in loader:
            served += 1
            if served == 0:  # the first batch pays for worker start-up
                started = time.perf_counter()
            if served == n_batches:
                break
    return n_batches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=192)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--competition", type=Path, help="an existing competition folder (default: generate one)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        comp = load_competition(args.competition) if args.competition else generated_competition(Path(tmp) / "c")
    raw_bytes = comp.train.estimated_size()
    feature_cfg, data_cfg = FeatureConfig(), DataConfig(window=args.window, batch_size=args.batch_size)
    folds = make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, SplitConfig(), comp.scored_dates)
    holdout = folds[-1]

    build(comp, holdout, feature_cfg, data_cfg)  # warm-up: imports and first-call caches
    resident = peak_resident_memory(lambda: build(comp, holdout, feature_cfg, data_cfg))
    traced = peak_traced_memory(lambda: build(comp, holdout, feature_cfg, data_cfg))
    panel_seconds, fold_seconds = build(comp, holdout, feature_cfg, data_cfg)

    panel = competition_panel(comp, feature_cfg)
    data = prepare_fold(comp, holdout, feature_cfg, ScreenConfig(), ScalingConfig(), data_cfg, panel=panel)
    print(fold_table([holdout], lag_mapping(comp.pairs), {holdout.name: len(data.feature_names)}))
    results = {
        "dates": len(panel.date_ids),
        "raw_columns": len(comp.feature_names),
        "panel_features": len(panel.names),
        "kept_features": len(data.feature_names),
        "train_samples": len(data.train),
        "window": args.window,
        "raw_panel_mb": raw_bytes / MB,
        "feature_panel_mb": panel.values.nbytes / MB,
        "window_tensor_mb": data.train.source.padded.nbytes / MB,
        "labels_mb": data.train.targets.numpy().nbytes / MB,
        "panel_seconds": panel_seconds,
        "fold_seconds": fold_seconds,
        "peak_traced_mb": traced / MB,
        "peak_resident_mb": resident / MB,
        "peak_memory_ratio": max(traced, resident) / raw_bytes,
        "batch_mb": args.batch_size * args.window * len(data.feature_names) * 4 / MB,
    }
    for threads, workers in LOADER_SETTINGS:
        results[f"batches_per_s_threads{threads}_workers{workers}"] = batches_per_second(
            data, args.batch_size, args.batches, threads, workers
        )
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:.3f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    ratio = results["peak_memory_ratio"]
    print(f"peak memory {ratio:.2f}x the raw panel (target < 3x): {'ok' if ratio < 3 else 'OVER'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
