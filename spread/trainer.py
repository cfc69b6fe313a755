"""The walk-forward run: folds, pruned fine-tunes, an optional final fit, the fold table, summary and manifest.

One explicit recipe, readable top to bottom (torchtune style: the library is `spread.fit`, `spread.optim`,
`spread.runtime`, `spread.forecast`; this module is the recipe):

    train(cfg, data, run)
      load the competition, make the folds (split.fold_table is logged and saved as folds.csv), write prior.json
      for each walk-forward fold: fit(fold) -> RUN/<fold>/best.pt (best validation competition score), last.pt
        if finetune_pruned:   fit(fold with the gate mask frozen to the kept features) -> RUN/<fold>-pruned/
      honest scores:          each fold's score at the epoch count the other folds choose (trained on if needed)
      if fold_members:        each walk-forward fold refitted M times at its honest epoch count, fixed length
                              -> RUN/<fold>-fixed/, RUN/<fold>-fixed-s<seed>/: their ensemble's honest score
      epoch count E:          from the walk-forward folds only (`epoch_count`; see TrainConfig's epoch rule)
      holdout:                fit(E epochs, no selection) -> RUN/holdout/ (and RUN/holdout-s<seed>/ per extra
                              member of train.holdout_members): its (ensemble's) score is the public-leaderboard
                              estimate
      if final_fit:           per seed of train.seeds, fit(every date labelled by the limit, E epochs)
                              -> RUN/final-s<seed>/ (the served model)
      gate analysis:          gate_weights.csv (sorted), pruned_features.csv (threshold or top-k)
      summary.json, manifest.json (sha256 of every file; the served checkpoints and what each was trained on)

`data.train_end = T` means that nothing after T reaches a weight or a selection: every fit's cutoff is at most T
(training labels released by T, features causal), screening and scaling see training rows only, and the fits
whose validation dates lie after T (the holdout) select nothing on them.

Determinism: on the CPU the same seed and data give bit-identical weights, and `resume` ends bit-identical to an
uninterrupted run (see `spread.fit`). Multi-GPU: launched by torchrun the processes train one
DistributedDataParallel model together; rank 0 alone writes the run folder.

References: Karpathy, nanoGPT (the loop); torchtune (recipe vs library).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from spread.checkpoint import data_fingerprint, load_checkpoint, write_manifest
from spread.competition import Competition, load_competition
from spread.errors import ArtifactError, ConfigError, DataError, SpreadError
from spread.fit import FitJob, RunContext, ensemble_metrics, epoch_metrics, extend_fit, fit
from spread.metrics import validation_metrics
from spread.prior import mean_rank_prior, write_prior
from spread.pruning import gate_table, select_features, write_gate_analysis
from spread.runfolder import (
    BEST, CONFIG_FILE, DATA_FILE, FOLDS_FILE, PRIOR_FILE, PRUNED_SUFFIX, SUMMARY_FILE, check_new_folder,
    checkpoint_name, read_data_fingerprint, read_data_record, remove_temporaries, write_data_record, write_json,
)
from spread.runlog import RunLog, add_honest_scores, mean_std, summarize
from spread.runtime import Runtime, broadcast_from_rank0, deterministic_kernels, start_runtime
from spread.splits import HOLDOUT, Fold, fold_table, format_fold_table, lag_mapping, make_folds
from spread.train_config import TrainConfig
from spread.windows import competition_panel, dataset_labels, label_matrix, prepare_fold, released_labels

if TYPE_CHECKING:
    from spread.config import Config

log = logging.getLogger(__name__)

FINAL_FOLD = "final"
RESUME_MAY_CHANGE = ("train.device", "train.amp", "train.tensorboard", "train.progress", "train.log_every_s",
                     "train.eval_batch_size", "data.num_workers")
"""Config fields that may differ when a run is resumed (they do not change what is computed on the CPU)."""


def check_run_folder(run_dir: Path, cfg: "Config", resume: bool) -> None:
    """A new run needs an empty folder; a resumed one needs its config.yaml, resolved by today's code, to match
    (RESUME_MAY_CHANGE aside)."""
    from spread.config import config_to_dict, load_config

    saved = run_dir / CONFIG_FILE
    if not resume:
        check_new_folder(run_dir, f" (use --resume {run_dir} to continue a run there)")
        return
    needed = [run_dir / name for name in (CONFIG_FILE, DATA_FILE, PRIOR_FILE)]  # what a run writes before any fit
    missing = [path for path in needed if not path.is_file()]
    if missing:
        raise ArtifactError(f"{missing[0]}: not found, {run_dir} is not a training run folder to resume")
    # the saved config as today's code resolves it: a field added since, at its default, is no change
    before, now = _flatten(config_to_dict(load_config(saved))), _flatten(config_to_dict(cfg))
    keys = (before.keys() | now.keys()) - set(RESUME_MAY_CHANGE)
    changed = sorted(key for key in keys if before.get(key) != now.get(key))
    if changed:
        raise ConfigError(f"{saved}: resuming with a different config; changed: {', '.join(changed)}")


def check_resumed_data(run_dir: Path, data_dir: Path, fingerprint: str) -> None:
    """A resumed run continues on the training files it started on: the fingerprint its data.json records (or,
    for a record older than fingerprints, the same folder); ConfigError before anything is written otherwise."""
    recorded = read_data_fingerprint(run_dir)
    before = read_data_record(run_dir)
    if recorded is not None and recorded != fingerprint:
        raise ConfigError(f"{run_dir}: resuming on other data: the training files of {data_dir} differ from those "
                          f"the run trained on ({before}); start a new run folder")
    if recorded is None and before.resolve() != Path(data_dir).resolve():
        raise ConfigError(f"{run_dir}: resuming on another data folder ({data_dir}) than the run's ({before})")


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


def final_fold(comp: Competition, limit: int) -> Fold:
    """All labelled dates with at least one label released by `limit`; an empty validation range after it."""
    first = int(comp.labels["date_id"].min())
    last_label = limit - int(comp.target_lags.min()) - 1
    return Fold(FINAL_FOLD, (first, last_label), (limit + 1, limit), embargo=0, cutoff=limit)


def competition_folds(comp: Competition, cfg: "Config") -> list[Fold]:
    """The run's folds: walk-forward, then the holdout on the test's scored dates (the baselines use the same)."""
    return make_folds(comp.labels["date_id"].to_numpy(), comp.target_lags, cfg.split,
                      scored_dates=comp.scored_dates or None, train_end=cfg.data.train_end)


def load_oracle(data_dir: Path, comp: Competition) -> np.ndarray | None:
    """The synthetic generator's oracle predictions on the train dates, when the folder has them."""
    from spread.competition_writer import ORACLE_FILE
    from spread.metrics import read_table

    path = data_dir / ORACLE_FILE
    if not path.is_file():
        return None
    try:
        frame = read_table(path)
        return label_matrix(frame, comp.train["date_id"].to_numpy(), comp.target_names).astype(np.float64)
    except SpreadError:
        raise
    except Exception as exc:  # polars' errors of a malformed file: one line naming it
        raise DataError(f"{path}: not a readable oracle file: {' '.join(str(exc).split())}") from exc


def oracle_score(ctx: RunContext, job: FitJob) -> float:
    """The synthetic oracle's competition score on the job's validation dates (NaN without an oracle)."""
    val = job.data.val
    if ctx.oracle is None or len(val) == 0:
        return float("nan")
    return validation_metrics(dataset_labels(val), ctx.oracle[val.rows], ctx.target_lags)["score"]


def save_fold_table(ctx: RunContext, folds: list[Fold], n_features: dict[str, int] | None) -> None:
    """folds.csv (rewritten with the feature counts at the end); the compact table in the log at the start."""
    table = fold_table(folds, lag_mapping(ctx.comp.pairs), n_features)
    if n_features is None:
        log.info("folds:\n%s", format_fold_table(table))
    table.write_csv(ctx.run_dir / FOLDS_FILE)


def epoch_count(cfg: TrainConfig, best_epochs: list[int]) -> tuple[int, str]:
    """Epochs of a fit whose validation dates must stay unseen (the holdout, the final fit), and the rule used.

    `train.final_fit_epochs` when set; else the median of the walk-forward folds' best epochs (rounded half up);
    with no walk-forward fold, `train.epochs`. Never anything measured on the fit's own validation dates.
    """
    if cfg.final_fit_epochs:
        return cfg.final_fit_epochs, "train.final_fit_epochs"
    if not best_epochs:
        return cfg.epochs, "train.epochs (no walk-forward fold)"
    return max(1, math.floor(statistics.median(best_epochs) + 0.5)), "median of the walk-forward folds' best epochs"


def fit_job(ctx: RunContext, fold: Fold, **kwargs) -> FitJob:
    """A FitJob on `fold` with its data prepared (screening and scaling on the fold's training rows only)."""
    cfg = ctx.cfg
    data = prepare_fold(ctx.comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
    return FitJob(fold.name, fold, data, schedule_epochs=cfg.train.epochs, **kwargs)


def finetune_pruned(ctx: RunContext, job: FitJob) -> dict:
    """Fine-tune a fit's best model with the low-gate features masked out; result of the pruned model.

    The holdout's fine-tune is fixed-length like the holdout (its validation dates select nothing). The gate is read
    from best.pt, not from the fit's result: every rank must prune the same features, and only rank 0 tracks it."""
    cfg = ctx.cfg.train
    best_path = ctx.run_dir / checkpoint_name(job.name, BEST)
    keep = select_features(np.asarray(load_checkpoint(best_path)["gate"], dtype=np.float64), cfg.prune_threshold,
                           cfg.prune_top_k)
    pruned = FitJob(f"{job.name}{PRUNED_SUFFIX}", job.fold, job.data, cfg.finetune_epochs, job.seed, role=job.role,
                    selects=job.selects, init_checkpoint=best_path, keep=keep)
    return fit(ctx, pruned)


def train(cfg: "Config", data_dir: str | Path | None, out_dir: str | Path, resume: bool = False) -> dict:
    """Train as configured and write the run folder; returns the summary (an empty dict on ranks other than 0).

    RUN/ holds the files of `spread.runfolder`. The manifest's inference checkpoints are the final-fit members
    (final-s<seed>/best.pt) when `train.final_fit`, else every fold's best.pt (the predictor averages their
    predictions). Nothing is written before the config, the run folder and the data have been checked. With
    `resume`, `data_dir` may be None (the folder recorded in RUN/data.json); fits whose last.pt says finished are
    skipped, an unfinished one continues after its last completed epoch, and the rest run as usual.
    Launched by torchrun (env WORLD_SIZE > 1), the processes train one DistributedDataParallel model together.
    """
    runtime, created_group = start_runtime(cfg.train)
    try:
        with deterministic_kernels(cfg.train.deterministic, runtime.device):
            return run(cfg, None if data_dir is None else Path(data_dir), Path(out_dir), resume, runtime)
    finally:
        if created_group:
            dist.destroy_process_group()


def run(cfg: "Config", data_dir: Path | None, run_dir: Path, resume: bool, runtime: Runtime) -> dict:
    """The run of `train` in this process: check everything, then folds, pruned fine-tunes, final fit, reports."""
    from spread.config import save_config

    started = time.perf_counter()
    if cfg.data.batch_size % runtime.world_size:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by {runtime.world_size} processes")
    if runtime.is_main:
        check_run_folder(run_dir, cfg, resume)
    if data_dir is None:
        if not resume:
            raise ConfigError("train: give --data DIR (the competition folder)")
        data_dir = read_data_record(run_dir)
    comp = load_competition(data_dir, require_test=False)
    fingerprint = data_fingerprint(comp)
    if resume and runtime.is_main:
        check_resumed_data(run_dir, data_dir, fingerprint)
    folds = competition_folds(comp, cfg)
    panel, oracle = competition_panel(comp, cfg.features), load_oracle(data_dir, comp)
    if runtime.is_main:  # everything is checked: only now does the run folder get written
        log.info("%s run %s on the data folder %s", "resuming" if resume else "starting", run_dir, data_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            for path in remove_temporaries(run_dir):
                log.info("removed %s (a temporary file left by an interrupted write)", path)
        save_config(cfg, run_dir / CONFIG_FILE)
        write_data_record(run_dir, data_dir, fingerprint)
    broadcast_from_rank0(None, runtime)  # the folder exists before any rank writes into it
    ctx = RunContext(
        cfg=cfg, comp=comp, run_dir=run_dir, runtime=runtime,
        runlog=RunLog(run_dir, enabled=runtime.is_main, tensorboard=cfg.train.tensorboard),
        panel=panel, fingerprint=fingerprint, resume=resume, oracle=oracle,
    )
    try:
        limit = label_limit(comp, cfg)
        if runtime.is_main:
            save_fold_table(ctx, folds, None)
            write_prior(run_dir / PRIOR_FILE, comp.target_names, mean_rank_prior(released_labels(comp, limit)))
        results, pruned, n_features, epoch_rule = fit_folds(ctx, folds)
        final = run_final_fit(ctx, epoch_rule["epochs"], limit) if cfg.train.final_fit else None
        if not runtime.is_main:
            return {}
        save_fold_table(ctx, folds, n_features)
        seconds = time.perf_counter() - started + sum(ctx.earlier_seconds.values())
        return write_reports(ctx, results, pruned, final, epoch_rule, seconds)
    finally:
        ctx.runlog.close()


def fit_folds(ctx: RunContext, folds: list[Fold]) -> tuple[dict, dict, dict, dict]:
    """Fit the walk-forward folds (selecting their best epochs), their honest scores, then the holdout.

    Returns results and pruned results by fit name, feature counts by fold, and the epoch rule's record.
    """
    cfg = ctx.cfg
    results, pruned, n_features, jobs = {}, {}, {}, {}
    walk_forward = [fold for fold in folds if fold.name != HOLDOUT]
    for fold in walk_forward:
        job = jobs[fold.name] = fit_job(ctx, fold, epochs=cfg.train.epochs, seed=cfg.seed)
        n_features[fold.name] = len(job.data.feature_names)
        results[fold.name] = fit(ctx, job) | {"oracle_score": oracle_score(ctx, job)}
        if cfg.train.finetune_pruned:
            pruned[fold.name] = finetune_pruned(ctx, job)
    for name, honest in honest_scores(ctx, jobs, results).items():
        results[name] |= honest
        if cfg.train.fold_members and honest["honest_epochs"]:
            results[name]["honest_ensemble"] = fixed_ensemble(ctx, jobs[name], honest["honest_epochs"])
    best_epochs = {name: results[name]["best_epoch"] for name in jobs if results[name]["best_epoch"]}
    epochs, rule = epoch_count(cfg.train, list(best_epochs.values()))
    epoch_rule = {"epochs": epochs, "rule": rule, "best_epochs": best_epochs}
    if ctx.runtime.is_main:
        log.info("fixed-length fits (holdout, final fit): %d epochs, %s %s", epochs, rule, best_epochs or "")
    for fold in folds:
        if fold.name == HOLDOUT:
            job = fit_job(ctx, fold, epochs=epochs, seed=cfg.seed, role=HOLDOUT, selects=False)
            n_features[fold.name] = len(job.data.feature_names)
            results[fold.name] = fit_holdout(ctx, job)
            if cfg.train.finetune_pruned:
                pruned[fold.name] = finetune_pruned(ctx, job)
    return results, pruned, n_features, epoch_rule


def member_name(seed: int, job: FitJob) -> str:
    """The run folder's sub-folder of an ensemble member with this seed (the job's own seed keeps its name)."""
    return job.name if seed == job.seed else f"{job.name}-s{seed}"


def fit_ensemble(ctx: RunContext, job: FitJob, first: dict, n_members: int) -> dict:
    """The other n_members - 1 fits of a fixed-length `job` whose first fit gave `first` (seeds job.seed + 1, ...;
    the same screen and scaler), scored as the ensemble of all: {"seeds", "members" (folders), "score",
    "member_scores", "metrics"}."""
    seeds = [job.seed + k for k in range(n_members)]
    scores = {job.name: first["best_score"]}
    for seed in seeds[1:]:
        member = replace(job, name=member_name(seed, job), seed=seed)
        scores[member.name] = fit(ctx, member)["best_score"]
    metrics = ensemble_metrics(ctx, job, [ctx.run_dir / checkpoint_name(name) for name in scores])
    return {"seeds": seeds, "members": list(scores), "score": metrics["score"], "member_scores": scores,
            "metrics": metrics}


def fixed_ensemble(ctx: RunContext, job: FitJob, epochs: int) -> dict:
    """`train.fold_members` fixed-length fits of a walk-forward fold's `job` for `epochs` (its honest epoch count,
    chosen by the other folds), scored as their ensemble (`fit_ensemble`; folders <fold>-fixed/ and
    <fold>-fixed-s<seed>/)."""
    fixed = replace(job, name=f"{job.name}-fixed", epochs=epochs, selects=False)
    result = fit_ensemble(ctx, fixed, fit(ctx, fixed), ctx.cfg.train.fold_members)
    if ctx.runtime.is_main:
        log.info("%s: honest ensemble score %.4f (%d fits of %d epochs, seeds %s)", job.name, result["score"],
                 len(result["seeds"]), epochs, result["seeds"])
    return result


def fit_holdout(ctx: RunContext, job: FitJob) -> dict:
    """The holdout: `train.holdout_members` fixed-length fits on its fold (seeds job.seed, job.seed + 1, ...; one
    screen and scaler), scored as their ensemble. The result is the first member's fit, with "epochs" and, for an
    ensemble, "ensemble" (`fit_ensemble`)."""
    result = fit(ctx, job) | {"oracle_score": oracle_score(ctx, job), "epochs": job.epochs}
    if ctx.cfg.train.holdout_members > 1:
        result["ensemble"] = fit_ensemble(ctx, job, result, ctx.cfg.train.holdout_members)
    if ctx.runtime.is_main:
        ensemble = result.get("ensemble")
        log.info("holdout score %.4f%s: the true out-of-sample estimate of the public leaderboard (%d epochs from the "
                 "walk-forward folds, labels released by %d)", ensemble["score"] if ensemble else result["best_score"],
                 f" (ensemble of seeds {ensemble['seeds']})" if ensemble else "", job.epochs, job.fold.train_cutoff)
    return result


def honest_scores(ctx: RunContext, jobs: dict[str, FitJob], results: dict) -> dict[str, dict]:
    """Per walk-forward fold: the epoch count the OTHER folds choose (`epoch_count`) and the fold's validation
    score at that epoch (trained on past an early stop when needed; `spread.fit.extend_fit`).

    Null with a single walk-forward fold (no other fold to choose from), or when that epoch was not validated
    (train.eval_every > 1).
    """
    honest = {}
    for name, job in jobs.items():
        others = [results[other]["best_epoch"] for other in jobs if other != name and results[other]["best_epoch"]]
        if not others:
            honest[name] = {"best_epoch_score": results[name]["best_score"], "honest_epochs": None,
                            "honest_score": None}
            continue
        epochs, _ = epoch_count(ctx.cfg.train, others)
        if epochs <= results[name]["epochs_run"]:  # already trained and validated: read it, reload nothing
            metrics = epoch_metrics(ctx.runlog.rows[name], epochs) if ctx.runtime.is_main else None
        else:
            metrics = extend_fit(ctx, job, epochs)
        metrics = broadcast_from_rank0(metrics, ctx.runtime)
        honest[name] = {"best_epoch_score": results[name]["best_score"], "honest_epochs": epochs,
                        "honest_score": metrics.get("score")}
        if ctx.runtime.is_main:
            log.info("%s: best-epoch score %.4f (epoch %d, chosen on its own dates), honest score %s (epoch %d, "
                     "chosen by the other folds)", name, results[name]["best_score"], results[name]["best_epoch"],
                     _fmt(metrics.get("score")), epochs)
    return honest


def _fmt(value: float | None) -> str:
    return "null" if value is None or not math.isfinite(value) else f"{value:.4f}"


def run_final_fit(ctx: RunContext, epochs: int, limit: int) -> dict:
    """The served model: one fit per seed of `train.seeds` on every labelled date known at `limit`, `epochs` long."""
    cfg = ctx.cfg
    fold = final_fold(ctx.comp, limit)
    members = {}
    for seed in cfg.train.seeds or [cfg.seed]:
        job = fit_job(ctx, fold, epochs=epochs, seed=seed, role=FINAL_FOLD, selects=False, validate=False)
        job.name = final_name(seed)
        members[job.name] = fit(ctx, job) | {"seed": seed, "checkpoint": checkpoint_name(job.name),
                                             "train_dates": list(fold.train_dates), "cutoff": fold.train_cutoff}
    return {"epochs": epochs, "seeds": [m["seed"] for m in members.values()], "members": members}


def final_name(seed: int) -> str:
    """The run folder's sub-folder of the final-fit member with this seed."""
    return f"{FINAL_FOLD}-s{seed}"


def served_members(results: dict, final: dict | None, ctx: RunContext) -> list[dict]:
    """What inference serves (manifest.json): the final-fit members, else every fold's best.pt."""
    if final is not None:
        return [{"checkpoint": m["checkpoint"], "role": FINAL_FOLD, "seed": m["seed"], "epochs": final["epochs"],
                 "train_dates": m["train_dates"], "cutoff": m["cutoff"]} for m in final["members"].values()]
    members = []
    for name in results:
        record = load_checkpoint(ctx.run_dir / checkpoint_name(name))
        members.append({"checkpoint": checkpoint_name(name), "role": record["role"], "seed": record["seed"],
                        "epochs": record["epoch"], "train_dates": record["fold"]["train_dates"],
                        "cutoff": record["fold"]["cutoff"]})
    return members


def write_reports(ctx: RunContext, results: dict, pruned: dict, final: dict | None, epoch_rule: dict,
                  seconds: float) -> dict:
    """Gate analysis, summary.json and manifest.json (rank 0); returns the summary."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    fits = results | ({} if final is None else final["members"])
    fold_gates = {name: (r["feature_names"], np.asarray(r["gate"])) for name, r in fits.items()}
    gates = gate_table(fold_gates)
    kept = write_gate_analysis(run_dir, gates, cfg.train.prune_threshold, cfg.train.prune_top_k)
    members = served_members(results, final, ctx)
    summary = build_summary(ctx, results, pruned, final, epoch_rule, [m["checkpoint"] for m in members], seconds)
    summary["kept_features"], summary["pruned_features"] = len(kept), gates.height - len(kept)  # pruned_features.csv
    write_json(run_dir / SUMMARY_FILE, summary)
    ctx.runlog.close()  # TensorBoard files complete before they are hashed
    write_manifest(run_dir, [m["checkpoint"] for m in members], members)
    if cfg.train.plots:  # after the manifest: pictures are for people, not artefacts inference checks
        from spread.plots import write_run_plots

        write_run_plots(run_dir)
    mean, std, estimate = summary["mean"], summary["std"], summary["public_leaderboard_estimate"] or {}
    log.info("walk-forward folds: best-epoch score %s +- %s, honest score %s +- %s; holdout score %s (the "
             "out-of-sample estimate of the public leaderboard); run folder %s", _fmt(mean["best_epoch_score"]),
             _fmt(std["best_epoch_score"]), _fmt(mean["honest_score"]), _fmt(std["honest_score"]),
             _fmt(estimate.get("score")), run_dir)
    return summary


def build_summary(
    ctx: RunContext, results: dict, pruned: dict, final: dict | None, epoch_rule: dict, inference: list[str],
    seconds: float,
) -> dict:
    """summary.json: per-fold results, mean +- std of every metric (each fold's reported epoch), the walk-forward
    folds' best-epoch and honest scores, the holdout's public-leaderboard estimate, the final fit, run facts."""
    folds = {}
    for name, result in results.items():
        entry = {k: v for k, v in result.items() if k not in ("feature_names", "gate")}
        if name in pruned:
            entry["pruned"] = {k: pruned[name][k] for k in ("best_epoch", "best_score", "n_features", "metrics")}
        folds[name] = entry
    summary = summarize(folds)
    walk_forward = [r for name, r in results.items() if name != HOLDOUT]
    for key in ("best_epoch_score", "honest_score"):
        summary["mean"][key], summary["std"][key] = mean_std([r.get(key) for r in walk_forward])
    if any("honest_ensemble" in r for r in walk_forward):
        summary["mean"]["honest_ensemble_score"], summary["std"]["honest_ensemble_score"] = mean_std(
            [(r.get("honest_ensemble") or {}).get("score") for r in walk_forward])
    summary["honest_score_note"] = (
        "honest_score: a walk-forward fold's validation score at the epoch count chosen from the other walk-forward "
        "folds (train.final_fit_epochs or the median of their best epochs); best_epoch_score is chosen on the "
        "fold's own validation dates and leans optimistic. Null with a single walk-forward fold.")
    summary["epoch_rule"] = epoch_rule
    holdout = results.get(HOLDOUT)
    ensemble = (holdout or {}).get("ensemble")
    summary["public_leaderboard_estimate"] = None if holdout is None else {
        "score": ensemble["score"] if ensemble else holdout["best_score"], "fold": HOLDOUT,
        "epochs": holdout["epochs"], "members": ensemble["members"] if ensemble else [HOLDOUT],
        "note": "the true out-of-sample estimate of the public leaderboard: the holdout validates on the test's "
                "scored dates, trains on labels released before them, and its epoch count comes from the "
                "walk-forward folds only; with train.holdout_members > 1 it is the score of those fits' ensemble "
                "(what `gateway --members holdout` replays)"}
    add_honest_scores(summary, trained=True)
    if pruned:
        pruned_summary = summarize({name: {"metrics": p["metrics"]} for name, p in pruned.items()})
        summary["pruned_mean"], summary["pruned_std"] = pruned_summary["mean"], pruned_summary["std"]
        summary["pruned_note"] = ("pruned_mean: each pruned fine-tune's best epoch, picked on its fold's own "
                                  "validation dates (optimistic, like mean.score); compare with mean, not honest")
    summary["final_fit"] = None if final is None else {
        "epochs": final["epochs"], "seeds": final["seeds"],
        "members": {name: {k: m[k] for k in ("seed", "steps", "n_features", "checkpoint", "train_dates")}
                    for name, m in final["members"].items()},
    }
    summary["inference_checkpoints"] = inference
    summary["run"] = {
        "device": str(ctx.runtime.device), "precision": ctx.runtime.precision,
        "world_size": ctx.runtime.world_size, "seconds": round(seconds, 2),
        "session_seconds": round(seconds - sum(ctx.earlier_seconds.values()), 2), "torch": torch.__version__,
        "data_fingerprint": ctx.fingerprint,
    }
    return summary
