"""The walk-forward run: folds, pruned fine-tunes, an optional final fit, the fold table, summary and manifest.

One explicit recipe, readable top to bottom (torchtune style: the library is `spread.fit`, `spread.optim`,
`spread.runtime`, `spread.forecast`; this module is the recipe):

    train(cfg, data, run)
      load the competition, make the folds (split.fold_table is logged and saved as folds.csv), write prior.json
      for each fold:          fit(fold)  -> RUN/<fold>/best.pt (best validation competition score), last.pt
        if finetune_pruned:   fit(fold with the gate mask frozen to the kept features) -> RUN/<fold>-pruned/
      gate analysis:          gate_weights.csv (sorted), pruned_features.csv (threshold or top-k)
      if final_fit:           fit(all labelled dates, no validation, epochs = mean best epoch) -> RUN/final/
      summary.json, manifest.json (sha256 of every file; the checkpoints the predictor loads)

Determinism: on the CPU the same seed and data give bit-identical weights, and `resume` ends bit-identical to an
uninterrupted run (see `spread.fit`). Multi-GPU: launched by torchrun the processes train one
DistributedDataParallel model together; rank 0 alone writes the run folder.

References: Karpathy, nanoGPT (the loop); torchtune (recipe vs library).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from spread.checkpoint import data_fingerprint, load_checkpoint, write_manifest
from spread.competition import Competition, load_competition
from spread.errors import ArtifactError, ConfigError
from spread.features import released
from spread.fit import FitJob, RunContext, fit, oracle_score
from spread.prior import mean_rank_prior, write_prior
from spread.pruning import gate_table, select_features, write_gate_analysis
from spread.runfolder import BEST, CONFIG_FILE, FOLDS_FILE, PRIOR_FILE, SUMMARY_FILE, checkpoint_name, write_json
from spread.runlog import RunLog, summarize
from spread.runtime import Runtime, broadcast_from_rank0, deterministic_kernels, start_runtime
from spread.splits import Fold, fold_table, lag_mapping, make_folds
from spread.windows import competition_panel, label_matrix, prepare_fold

if TYPE_CHECKING:
    from spread.config import Config

log = logging.getLogger(__name__)

FINAL_FOLD = "final"
RESUME_MAY_CHANGE = ("train.device", "train.amp", "train.tensorboard", "train.progress", "train.eval_batch_size",
                     "data.num_workers")
"""Config fields that may differ when a run is resumed (they do not change what is computed on the CPU)."""


def check_run_folder(run_dir: Path, cfg: "Config", resume: bool) -> None:
    """A new run needs an empty folder; a resumed one needs its config.yaml to match (RESUME_MAY_CHANGE aside)."""
    from spread.config import config_to_dict, read_config_file

    saved = run_dir / CONFIG_FILE
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: run folder is not empty (use --resume {run_dir} to continue it)")
        return
    if not saved.is_file():
        raise ArtifactError(f"{saved}: not found, {run_dir} is not a run folder to resume")
    before, now = _flatten(read_config_file(saved)), _flatten(config_to_dict(cfg))
    keys = (before.keys() | now.keys()) - set(RESUME_MAY_CHANGE)
    changed = sorted(key for key in keys if before.get(key) != now.get(key))
    if changed:
        raise ConfigError(f"{saved}: resuming with a different config; changed: {', '.join(changed)}")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def label_limit(comp: Competition, cfg: "Config") -> int:
    """The last date whose data training may use: data.train_end, capped at the last train date."""
    last = int(comp.train["date_id"].max())
    return last if cfg.data.train_end is None else min(int(cfg.data.train_end), last)


def released_labels(comp: Competition, limit: int) -> np.ndarray:
    """(dates, N) training labels known at `limit` (NaN where not yet released), for the prior."""
    date_ids = comp.labels["date_id"].to_numpy()
    labels = label_matrix(comp.labels, date_ids, comp.target_names).astype(np.float64)
    return np.where(released(date_ids, comp.target_lags, limit), labels, np.nan)


def final_fold(comp: Competition, limit: int) -> Fold:
    """All labelled dates with at least one label released by `limit`; an empty validation range after it."""
    first = int(comp.labels["date_id"].min())
    last_label = limit - int(comp.target_lags.min()) - 1
    return Fold(FINAL_FOLD, (first, last_label), (limit + 1, limit), embargo=0, cutoff=limit)


def load_oracle(data_dir: Path, comp: Competition) -> np.ndarray | None:
    """The synthetic generator's oracle predictions on the train dates, when the folder has them."""
    from spread.layout import ORACLE_FILE
    from spread.metrics import read_table

    path = data_dir / ORACLE_FILE
    if not path.is_file():
        return None
    frame = read_table(path)
    return label_matrix(frame, comp.train["date_id"].to_numpy(), comp.target_names).astype(np.float64)


def save_fold_table(ctx: RunContext, folds: list[Fold], n_features: dict[str, int] | None) -> None:
    import polars as pl

    table = fold_table(folds, lag_mapping(ctx.comp.pairs), n_features)
    if n_features is None:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
            log.info("folds:\n%s", table)
    table.write_csv(ctx.run_dir / FOLDS_FILE)


def finetune_pruned(ctx: RunContext, name: str, fold_data: FoldData, fold: Fold) -> dict:
    """Fine-tune a fold's best model with the low-gate features masked out; result of the pruned model."""
    cfg = ctx.cfg.train
    best = load_checkpoint(ctx.run_dir / checkpoint_name(name, BEST))
    keep = select_features(np.asarray(best["gate"], dtype=np.float64), cfg.prune_threshold, cfg.prune_top_k)
    job = FitJob(f"{name}-pruned", fold, fold_data, cfg.finetune_epochs,
                 init_checkpoint=ctx.run_dir / checkpoint_name(name, BEST), keep=keep)
    return fit(ctx, job)


def train(cfg: "Config", data_dir: str | Path, out_dir: str | Path, resume: bool = False) -> dict:
    """Train as configured and write the run folder; returns the summary (an empty dict on ranks other than 0).

    RUN/ holds config.yaml, folds.csv, metrics.csv, summary.json, prior.json, gate_weights.csv,
    pruned_features.csv, tensorboard/ (when enabled), <fold>/best.pt and last.pt per fit, and manifest.json. The
    manifest's inference checkpoints are final/best.pt when `train.final_fit`, else every fold's best.pt (the
    predictor averages their predictions). With `resume`, fits whose last.pt says finished are skipped, an
    unfinished one continues after its last completed epoch, and the rest run as usual.
    Launched by torchrun (env WORLD_SIZE > 1), the processes train one DistributedDataParallel model together.
    """
    runtime, created_group = start_runtime(cfg.train)
    try:
        with deterministic_kernels(cfg.train.deterministic, runtime.device):
            return run(cfg, Path(data_dir), Path(out_dir), resume, runtime)
    finally:
        if created_group:
            dist.destroy_process_group()


def run(cfg: "Config", data_dir: Path, run_dir: Path, resume: bool, runtime: Runtime) -> dict:
    """The run of `train` in this process: folds, pruned fine-tunes, final fit, then the run folder's reports."""
    from spread.config import save_config

    started = time.perf_counter()
    if runtime.is_main:
        check_run_folder(run_dir, cfg, resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
    if cfg.data.batch_size % runtime.world_size:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by {runtime.world_size} processes")
    broadcast_from_rank0(None, runtime)  # the folder exists before any rank reads it

    comp = load_competition(data_dir, require_test=False)
    folds = make_folds(comp.labels["date_id"].to_numpy(), comp.target_lags, cfg.split,
                       scored_dates=comp.scored_dates or None, train_end=cfg.data.train_end)
    ctx = RunContext(
        cfg=cfg, comp=comp, run_dir=run_dir, runtime=runtime,
        runlog=RunLog(run_dir, enabled=runtime.is_main, tensorboard=cfg.train.tensorboard),
        panel=competition_panel(comp, cfg.features), fingerprint=data_fingerprint(comp), resume=resume,
        oracle=load_oracle(data_dir, comp),
    )
    try:
        limit = label_limit(comp, cfg)
        if runtime.is_main:
            save_fold_table(ctx, folds, None)
            write_prior(run_dir / PRIOR_FILE, comp.target_names, mean_rank_prior(released_labels(comp, limit)))
        results, pruned, n_features = fit_folds(ctx, folds)
        final = run_final_fit(ctx, results, limit) if cfg.train.final_fit else None
        if not runtime.is_main:
            return {}
        save_fold_table(ctx, folds, n_features)
        return write_reports(ctx, results, pruned, final, time.perf_counter() - started)
    finally:
        ctx.runlog.close()


def fit_folds(ctx: RunContext, folds: list[Fold]) -> tuple[dict, dict, dict]:
    """Fit every fold (and its pruned fine-tune); results, pruned results and feature counts by fold name."""
    cfg = ctx.cfg
    results, pruned, n_features = {}, {}, {}
    for fold in folds:
        fold_data = prepare_fold(ctx.comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
        n_features[fold.name] = len(fold_data.feature_names)
        job = FitJob(fold.name, fold, fold_data, cfg.train.epochs)
        results[fold.name] = fit(ctx, job) | {"oracle_score": oracle_score(ctx, job)}
        if cfg.train.finetune_pruned:
            pruned[fold.name] = finetune_pruned(ctx, fold.name, fold_data, fold)
    return results, pruned, n_features


def write_reports(ctx: RunContext, results: dict, pruned: dict, final: dict | None, seconds: float) -> dict:
    """Gate analysis, summary.json and manifest.json (rank 0); returns the summary."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    fold_gates = {name: (r["feature_names"], np.asarray(r["gate"])) for name, r in results.items()}
    if final is not None:
        fold_gates[FINAL_FOLD] = (final["feature_names"], np.asarray(final["gate"]))
    kept = write_gate_analysis(run_dir, gate_table(fold_gates), cfg.train.prune_threshold, cfg.train.prune_top_k)
    inference = [checkpoint_name(FINAL_FOLD)] if final is not None else [checkpoint_name(name) for name in results]
    summary = build_summary(ctx, results, pruned, final, kept, inference, seconds)
    write_json(run_dir / SUMMARY_FILE, summary)
    ctx.runlog.close()  # TensorBoard files complete before they are hashed
    write_manifest(run_dir, inference)
    log.info("mean validation score %.4f +- %.4f over %d fold(s); run folder %s",
             summary["mean"].get("score", float("nan")), summary["std"].get("score", float("nan")), len(results),
             run_dir)
    return summary


def run_final_fit(ctx: RunContext, results: dict, limit: int) -> dict:
    """Fit on every labelled date known at `limit`, for the mean best epoch of the folds (or final_fit_epochs)."""
    cfg = ctx.cfg
    best_epochs = [r["best_epoch"] for r in results.values() if r["best_epoch"]]
    epochs = cfg.train.final_fit_epochs or max(1, round(sum(best_epochs) / max(len(best_epochs), 1)))
    fold = final_fold(ctx.comp, limit)
    fold_data = prepare_fold(ctx.comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
    result = fit(ctx, FitJob(FINAL_FOLD, fold, fold_data, epochs, validate=False))
    return result | {"epochs": epochs, "checkpoint": checkpoint_name(FINAL_FOLD)}


def build_summary(
    ctx: RunContext, results: dict, pruned: dict, final: dict | None, kept: list[str], inference: list[str],
    seconds: float,
) -> dict:
    """summary.json: per-fold results and mean +- std of every metric (at each fold's best epoch)."""
    folds = {}
    for name, result in results.items():
        entry = {k: v for k, v in result.items() if k not in ("feature_names", "gate")}
        if name in pruned:
            entry["pruned"] = {k: pruned[name][k] for k in ("best_epoch", "best_score", "n_features", "metrics")}
        folds[name] = entry
    summary = summarize(folds)
    oracle = [r["oracle_score"] for r in results.values() if math.isfinite(r["oracle_score"])]
    if oracle:
        summary["mean"]["oracle_score"] = sum(oracle) / len(oracle)
        summary["oracle_fraction"] = summary["mean"].get("score", float("nan")) / summary["mean"]["oracle_score"]
    if pruned:
        pruned_summary = summarize({name: {"metrics": p["metrics"]} for name, p in pruned.items()})
        summary["pruned_mean"], summary["pruned_std"] = pruned_summary["mean"], pruned_summary["std"]
    summary["final_fit"] = None if final is None else {
        k: final[k] for k in ("epochs", "steps", "n_features", "checkpoint")
    }
    summary["pruned_features"] = len(kept)
    summary["inference_checkpoints"] = inference
    summary["run"] = {
        "device": str(ctx.runtime.device), "precision": ctx.runtime.precision,
        "world_size": ctx.runtime.world_size, "seconds": round(seconds, 2), "torch": torch.__version__,
        "data_fingerprint": ctx.fingerprint,
    }
    return summary
