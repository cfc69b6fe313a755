"""The lever lab: named override sets of the Transformer against a reference and the peers, on the same folds.

    python -m spread.lab.levers --work /tmp/levers [--base configs/default.yaml] [--levers ref patch16 ...]
        [--data-seeds 0 1 2] [--train-seeds 0] [--peers ridge reduced_rank lightgbm regularised_prior mean_rank]
        [--jobs 2] [--out FILE.md] [--preset realistic_strong|realistic_fxvol|realistic_fxvol_rank1] [--folds 6]

Every run is a child process (`python -m spread train` or `python -m spread baseline`, OMP_NUM_THREADS=1, at most
`--jobs` at once) on the synthetic `realistic` preset (or the diagnostic `--preset realistic_strong`, the
observable `--preset realistic_fxvol` or its low-rank diagnostic `--preset realistic_fxvol_rank1`) at its default
size, data seed by data seed, with the config `--base` (default `BASE_CONFIG`) plus `BUDGET` (a short CPU budget
and no final fit, identical for every lever) plus the lever's overrides. A run folder is reused as the bench
reuses its own (`spread.lab.grid.finished_summary`: summary.json present and config.yaml equal to the config the
child resolves), so an interrupted lab resumes.

The cells, the pairing, the best peer and the oracle fraction are the bench's (`spread.lab.stats`): only honest
scores count (per walk-forward fold its `honest_score`, the validation score at the epoch count the other folds
choose; the holdout at a fixed epoch count from the walk-forward folds; a peer's per-fold score, its
hyper-parameters chosen on training dates only). A cell is (data seed, training seed, fold); a lever is paired with
the reference on the same cell, and with the best of `stats.PEERS` (highest mean) on the same (data seed, fold).
Per lever the table gives the mean +- population std over cells, the paired delta, the
cells won, the median ms per optimiser step (epoch wall time including its validation / steps), the fraction of the
oracle's mean score on the same cells, and the gate's selection: the share of gates below `train.prune_threshold`,
the std of the gates within a fit, and the AUC of the planted drivers' features among the gates (features of the
generator's driver FX pairs, the only inputs of its regime-dependent lead-lag signal; `spread.synth.build_universe`
replays the draw).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from spread.config import Config, load_config
from spread.lab import REPO_ROOT
from spread.lab.grid import RunTally, finished_summary
from spread.lab.render import markdown_table, plus_minus
from spread.lab.stats import ORACLE, PEERS, SCORE_SCHEMA, mean_std, paired_difference, quality_table, summary_cells
from spread.splits import HOLDOUT

PRESET = "realistic"
LAB_PRESETS = (PRESET, "realistic_strong", "realistic_fxvol", "realistic_fxvol_rank1")
"""Presets the lab runs on: the default, its diagnostic with the cross-asset signal twice as strong, the
observable preset (the lead-lag signed by an FX volatility gauge) and its low-rank, twice as strong diagnostic."""
BASE_CONFIG = REPO_ROOT / "configs" / "default.yaml"
BUDGET = ("train.final_fit=false", "train.plots=false", "train.progress=false", "train.epochs=8",
          "train.max_steps_per_epoch=16", "train.early_stopping_patience=3")
"""The same short budget for every lever: 8 epochs of at most 16 steps, patience 3, no final fit."""
REFERENCE = "ref"
PRUNED_FINETUNE = ("train.finetune_pruned=true", "train.finetune_epochs=2")
"""Fine-tune each fit for 2 epochs on the features its gate keeps (reported beside, never a cell)."""
DECOUPLED_GATE = ("loss.gate_penalty=decoupled", "train.gate_lr_scale=1000", *PRUNED_FINETUNE)
"""The decoupled gate penalty (its lambda is the lever's), the gate's LR x1000 so that a noise gate can close
within the budget's ~100 steps, and the pruned fine-tune."""
QUICK_SHAPE = ("data.window=64", "model.d_model=64", "model.n_layers=2", "model.patch_len=1",
               "screen.ic_max_features=256")
TUNED_BUDGET = ("model.gate_init=3.0", "loss.gate_lambda=0.00015", "train.gate_lr_scale=1", "loss.rank_weight=0.78",
                "loss.regression_weight=1.14", "train.lr=0.0002", "train.epochs=4", "train.max_steps_per_epoch=40",
                "train.early_stopping_patience=5")
QUICK_TUNED = (*QUICK_SHAPE, *TUNED_BUDGET)
"""The small fast shape the tuning study found (`spread tune`, bench/RESULTS.md), with its hyper-parameters."""
BIAS_LR30 = "train.head_bias_lr_scale=30"
"""The lag heads' biases at 30x the LR, today's default (bench/LEVERS.md "The constant the Transformer does not
learn"): the `bias_lr30*` levers are meant for `--base` = commit 3314502's default (bias LR x1), so that the lab
reuses that section's runs; on today's default this override changes nothing."""
OWN, MARKET_VOL = "data.own_features=true", "features.market_vol=[5,20]"
KEEP_RET1 = "screen.always_keep=[^market__,__ret1$]"
"""Keep every one-day return (and the market features) whatever its IC."""
BUDGET_4X = ("train.epochs=16", "train.max_steps_per_epoch=32")
"""Four times the default's training budget (16 epochs of 32 steps)."""
BUDGET_8X = ("train.epochs=16", "train.max_steps_per_epoch=64")
"""Eight times the default's training budget (16 epochs of 64 steps)."""
DRIVERS = "EURJPY|AUDNZD|ZARUSD|ZARGBP|EURNZD|NOKCHF|CHFJPY|EURUSD|GBPCAD"
"""The planted FX drivers of data seeds 0, 1 and 2 (`Universe.drivers`, 3 per seed)."""
KEEP_DRIVERS = f"screen.always_keep=[^market__,^FX_({DRIVERS})__ret(5|20)$]"
"""A diagnostic, not a lever: keep the 5- and 20-date returns of the planted FX drivers of data seeds 0, 1 and 2
(`Universe.drivers`; 3 per seed, 9 names x 2 horizons = 18 features, 12 of them not drivers of that seed). Says
whether the screen, which keeps 0-3 of them, is what stops the Transformer from learning the regime-dependent
lead-lag."""
VOL_X = "features.vol_interaction=20"
"""Every price column's returns times the market__vol20 gauge (`FeatureConfig.vol_interaction`)."""
VOL_SIGN = (VOL_X, "features.vol_interaction_form=sign")
"""Every price column's returns times the regime the market__vol20 gauge's sign reads (+1 calm, -1 turbulent):
the interaction an effect that flips sign between regimes is linear in (`FeatureConfig.vol_interaction_form`)."""
VOL_SIGN5 = ("features.vol_interaction=5", "features.vol_interaction_form=sign")
"""The same with the market__vol5 gauge's sign, which reads the generator's calm/turbulent state better: it agrees
on 0.890 of the validation dates of the issue's grid against 0.817 for market__vol20's (bench/CEILING-folds6.md)."""
KEEP_DRIVERS_X = (f"screen.always_keep=[^market__,^FX_({DRIVERS})__ret(5|20)$,"
                  f"^regime__FX_({DRIVERS})_ret(5|20)_xvol20$]")
"""KEEP_DRIVERS and the same returns' gauge interactions (with VOL_X): a diagnostic, not a lever."""
PANEL_OFF = "screen.min_abs_ic=1.0"
"""A diagnostic, not a lever: the screen drops every panel feature but the always-kept market volatility gauges
(means over every price column), so the encoder sees no per-column input and the model has, besides them, its
per-target own features only. Says how much of the Transformer's score comes from the cross-section of the panel."""
LEVERS: dict[str, tuple[str, ...]] = {
    "ref": (),
    "patch4": ("model.patch_len=4",),
    "patch16": ("model.patch_len=16",),
    "listwise": ("loss.rank_loss=listwise",),
    "window128": ("data.window=128",),
    "window256": ("data.window=256",),
    "screen_per_target": ("screen.ic_rank=per_target",),
    "lr1e-3": ("train.lr=0.001",),
    "lr1e-4": ("train.lr=0.0001",),
    "gate_select": ("model.gate_init=0.0", "loss.gate_lambda=0.0003", "train.gate_lr_scale=100", *PRUNED_FINETUNE),
    "gate_init0": ("model.gate_init=0.0",),
    "gate_strong": ("model.gate_init=0.0", "loss.gate_lambda=0.003", "train.gate_lr_scale=100", *PRUNED_FINETUNE,
                    "train.prune_top_k=32"),
    "listwise_gate": ("loss.rank_loss=listwise", "model.gate_init=0.0", "loss.gate_lambda=0.003",
                      "train.gate_lr_scale=100"),
    "variate": ("model.tokens=variate",),
    "variate_lr1e-3": ("model.tokens=variate", "train.lr=0.001"),
    "variate_d224": ("model.tokens=variate", "model.d_model=224"),
    "variate_l4": ("model.tokens=variate", "model.n_layers=4"),
    "variate_lr1e-4": ("model.tokens=variate", "train.lr=0.0001"),
    "variate_dropout0.2": ("model.tokens=variate", "model.dropout=0.2"),
    "screen128": ("screen.ic_max_features=128",),
    "screen256": ("screen.ic_max_features=256",),
    "window64": ("data.window=64",),
    "quick_tuned": QUICK_TUNED,
    "quick_tuned_own": (*QUICK_TUNED, OWN),
    "tuned_budget": TUNED_BUDGET,
    "own": (OWN,),
    "own_listwise": (OWN, "loss.rank_loss=listwise"),
    "market_vol": (MARKET_VOL,),
    "market_vol_own": (MARKET_VOL, OWN),
    "experts2_mv": ("model.head_experts=2", MARKET_VOL),
    "experts4_mv": ("model.head_experts=4", MARKET_VOL),
    "rank8_mv": ("model.head_rank=8", MARKET_VOL),
    "rank8_mv_e2": ("model.head_rank=8", "model.head_experts=2", MARKET_VOL),
    "rank16_mv_own": ("model.head_rank=16", MARKET_VOL, OWN),
    "ret1_mv_own": (MARKET_VOL, OWN, KEEP_RET1),
    "ret1_mv_own_r16": (MARKET_VOL, OWN, KEEP_RET1, "model.head_rank=16"),
    "d224": ("model.d_model=224",),
    "layers4": ("model.n_layers=4",),
    "quick_tuned_own_mv": (*QUICK_TUNED, OWN, MARKET_VOL),
    "qto_mv_e2": (*QUICK_TUNED, OWN, MARKET_VOL, "model.head_experts=2"),
    "qto_mv_long": (*QUICK_TUNED, OWN, MARKET_VOL, "train.epochs=8"),
    "qto_mv_w128": (*QUICK_TUNED, OWN, MARKET_VOL, "data.window=128"),
    "qto_mv_reg": (*QUICK_TUNED, OWN, MARKET_VOL, "loss.rank_weight=0", "train.predict_with=reg"),
    "qto_mv_wd": (*QUICK_TUNED, OWN, MARKET_VOL, "train.weight_decay=0.1"),
    "qto_ret1": (*QUICK_TUNED, OWN, MARKET_VOL, KEEP_RET1),
    "drivers_diag": (KEEP_DRIVERS,),
    "momentum4": ("model.momentum_decays=4",),
    "momentum8": ("model.momentum_decays=8",),
    "momentum4_drivers_diag": ("model.momentum_decays=4", KEEP_DRIVERS),
    "head_rank8": ("model.head_rank=8",),
    "head_rank32": ("model.head_rank=32",),
    "head_rank48": ("model.head_rank=48",),
    "head_rank64": ("model.head_rank=64",),
    "head_rank128": ("model.head_rank=128",),
    "head_rank320": ("model.head_rank=320",),
    "dropout0.2": ("model.dropout=0.2",),
    "fold_members3": ("train.fold_members=3",),
    "panel_off_diag": (PANEL_OFF,),
    "vol_x": (VOL_X,),
    "vol_x_drivers_diag": (VOL_X, KEEP_DRIVERS_X),
    "vol_x_screen128": (VOL_X, "screen.ic_max_features=128"),
    "epochs16": ("train.epochs=16",),
    "ema0.9": ("train.ema_decay=0.9",),
    "ema0.97": ("train.ema_decay=0.97",),
    "gate_l0.03": ("loss.gate_lambda=0.03", *PRUNED_FINETUNE),
    "gate_l0.1": ("loss.gate_lambda=0.1", *PRUNED_FINETUNE),
    "gate_dec0.1": (*DECOUPLED_GATE, "loss.gate_lambda=0.1"),
    "gate_dec0.3": (*DECOUPLED_GATE, "loss.gate_lambda=0.3"),
    "prior0.5": ("model.prior_weight=0.5",),
    "prior1": ("model.prior_weight=1.0",),
    "prior2": ("model.prior_weight=2.0",),
    "prior4": ("model.prior_weight=4.0",),
    "bias_lr30": (BIAS_LR30,),
    "bias_lr1": ("train.head_bias_lr_scale=1",),
    "own_vol_rank_off": ("data.own_features=false", "features.market_vol=[]", "model.head_rank=0"),
    "bias_lr100": ("train.head_bias_lr_scale=100",),
    "bias_lr30_prior1": (BIAS_LR30, "model.prior_weight=1.0"),
    "bias_lr30_rank": (BIAS_LR30, "loss.target=rank"),
    "bias_lr30_rank_mse": (BIAS_LR30, "loss.target=rank", "loss.regression=mse"),
    "bias_lr30_rank_prior1": (BIAS_LR30, "loss.target=rank", "model.prior_weight=1.0"),
    "bias_lr30_batch64": (BIAS_LR30, "data.batch_size=64"),
    "bias_lr30_batch128": (BIAS_LR30, "data.batch_size=128"),
    "prior1_batch64": ("model.prior_weight=1.0", "data.batch_size=64"),
    "ret1": (KEEP_RET1,),
    "ret1_vol_x": (KEEP_RET1, VOL_X),
    "ret1_momentum4": (KEEP_RET1, "model.momentum_decays=4"),
    "ret1_budget4x": (KEEP_RET1, *BUDGET_4X),
    "budget4x": BUDGET_4X,
    "lr1e3": ("train.lr=0.001",),
    "budget4x_lr1e3": (*BUDGET_4X, "train.lr=0.001"),
    "mom4_budget4x": ("model.momentum_decays=4", *BUDGET_4X),
    "volx128_budget4x": (VOL_X, "screen.ic_max_features=128", *BUDGET_4X),
    "volx128_budget4x_per_target": (VOL_X, "screen.ic_max_features=128", *BUDGET_4X, "screen.ic_rank=per_target"),
    "volx128_budget8x": (VOL_X, "screen.ic_max_features=128", *BUDGET_8X),
    "volx256_budget4x": (VOL_X, "screen.ic_max_features=256", *BUDGET_4X),
    "volsign": VOL_SIGN,
    "volsign5": VOL_SIGN5,
    "volsign5_128": (*VOL_SIGN5, "screen.ic_max_features=128"),
    "volsign5_128_budget4x": (*VOL_SIGN5, "screen.ic_max_features=128", *BUDGET_4X),
}
"""Lever name -> overrides on top of the base config and BUDGET (ref: the base config itself)."""


def data_folder(work: Path, seed: int, preset: str = PRESET) -> Path:
    """The synthetic preset at data seed `seed`, generated once."""
    from spread.synth import generate

    folder = work / "data" / f"{preset}-s{seed}"
    if not (folder / "train.csv").is_file():
        generate(folder, seed=seed, preset=preset, overwrite=True)
    return folder


def runs_folder(work: Path, preset: str, folds: int | None = None) -> Path:
    """Where the run folders of one preset go: `runs` for the default preset, `runs-{preset}` for another (a run
    is reused by its config alone, so runs on different data must not share a folder), with `-folds{N}` when every
    run has N walk-forward folds (`--folds`: a stale folder is started afresh, so another split must not share one
    either)."""
    name = "runs" if preset == PRESET else f"runs-{preset}"
    return work / (name if folds is None else f"{name}-folds{folds}")


def command(kind: str, name: str, data: Path, out: Path, seed: int, overrides: tuple[str, ...],
            base: Path = BASE_CONFIG) -> list[str]:
    head = ["train"] if kind == "lever" else ["baseline", name]
    return [sys.executable, "-m", "spread", *head, "--data", str(data), "--out", str(out), "--config", str(base),
            *BUDGET, *overrides, f"seed={seed}"]


@dataclass
class LabRun:
    """One run of the lab: the model it scores, its cell keys, its folder, its child command and resolved config."""

    model: str
    """Lever name, or the peer's / the oracle's baseline name."""
    data_seed: int
    train_seed: int | None
    """None for the peers and the oracle (they do not depend on it)."""
    out: Path
    argv: list[str]
    cfg: Config
    """The config the child resolves (`--config` plus the overrides): a finished folder with it is reused."""
    preset: str = PRESET
    """The synthetic preset of its data."""


def plan_runs(work: Path, levers: list[str], data_seeds: list[int], train_seeds: list[int], peers: list[str],
              base: Path, preset: str = PRESET, folds: int | None = None) -> list[LabRun]:
    """Every run of the lab, data seed by data seed: the levers per training seed, then the peers and the oracle
    (with `folds`, every one of them on that many walk-forward folds)."""
    split = () if folds is None else (f"split.n_folds={folds}",)
    runs = []
    for data_seed in data_seeds:
        data = data_folder(work, data_seed, preset)
        models = [(name, "lever", LEVERS[name], seed) for name in levers for seed in train_seeds]
        models += [(name, "peer", (), None) for name in [*peers, ORACLE]]
        for name, kind, overrides, seed in models:
            out = runs_folder(work, preset, folds) / name / f"s{data_seed}"
            out = out if seed is None else out / f"t{seed}"
            argv = command(kind, name, data, out, seed or 0, (*split, *overrides), base)
            cfg = load_config(base, [*BUDGET, *split, *overrides, f"seed={seed or 0}"])  # fails fast on a bad one
            runs.append(LabRun(name, data_seed, seed, out, argv, cfg, preset))
    return runs


def run_all(runs: list[LabRun], parallel: int) -> None:
    """Run the child processes, `parallel` at a time, one thread each; a failure stops the lab."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    queue, running = list(runs), []
    while queue or running:
        while queue and len(running) < parallel:
            run = queue.pop(0)
            run.out.parent.mkdir(parents=True, exist_ok=True)
            log = open(run.out.parent / f"{run.out.name}.log", "w")
            running.append((run, subprocess.Popen(run.argv, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {run.out}", flush=True)
        time.sleep(1.0)
        for item in list(running):
            run, process, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            if process.returncode:
                raise SystemExit(f"{' '.join(run.argv)} failed ({process.returncode}); see {run.out}.log")
            print(f"finished {run.out}", flush=True)


def step_ms(run: Path) -> float:
    """Median over epochs of the epoch's wall time (validation included) per optimiser step, in ms."""
    rows = pl.read_csv(run / "metrics.csv")
    per_step = []
    for _, fold_rows in rows.group_by("fold"):
        steps = np.diff(np.concatenate([[0], fold_rows["step"].to_numpy()]))
        per_step += [s / n for s, n in zip(fold_rows["seconds"].to_numpy(), steps) if n > 0]
    return 1e3 * statistics.median(per_step) if per_step else float("nan")


def driver_features(names: list[str], seed: int, preset: str = PRESET) -> np.ndarray:
    """(features,) bool: the feature is computed from one of the generator's driver FX pairs (data seed `seed`)."""
    from spread.synth import build_universe, resolve_preset

    drivers = build_universe(resolve_preset(preset), np.random.default_rng(seed)).drivers
    return np.array([any(f"FX_{pair}" in name for pair in drivers) for name in names])


def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half; NaN without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def gate_stats(run: Path, seed: int, threshold: float, preset: str = PRESET) -> dict[str, float]:
    """Share of gates below `threshold`, their spread, and the drivers' AUC, over every fit's gates."""
    table = pl.read_csv(run / "gate_weights.csv")
    folds = [c for c in table.columns if c not in ("feature", "mean")]
    drivers = driver_features(table["feature"].to_list(), seed, preset)
    closed, spread, aucs = [], [], []
    for fold in folds:
        values = table[fold].to_numpy().astype(np.float64)
        seen = np.isfinite(values)
        closed.append(float((values[seen] < threshold).mean()))
        spread.append(float(values[seen].std()))
        aucs.append(auc(drivers[seen], values[seen]))
    return {"closed": float(np.mean(closed)), "gate_std": float(np.mean(spread)), "driver_auc": float(np.nanmean(aucs))
            if np.isfinite(aucs).any() else float("nan"), "drivers_screened": float(drivers.sum())}


def lever_extras(runs: list[LabRun], threshold: float) -> dict[str, dict[str, float]]:
    """Per lever: the median ms per step and the mean gate statistics over its runs."""
    extras = {}
    for name in dict.fromkeys(run.model for run in runs if run.train_seed is not None):
        mine = [run for run in runs if run.model == name]
        gates = [gate_stats(run.out, run.data_seed, threshold, run.preset) for run in mine]
        extras[name] = {"ms": statistics.median(step_ms(run.out) for run in mine)}
        extras[name] |= {key: float(np.nanmean([g[key] for g in gates]))
                         for key in ("closed", "gate_std", "driver_auc")}
    return extras


def render_levers(scores: pl.DataFrame, levers: list[str], extras: dict[str, dict[str, float]]) -> list[str]:
    """The lever table and the peer table (markdown lines) of the honest score cells `scores` (SCORE_SCHEMA).

    Per lever: its paired difference to `REFERENCE` cell by cell (same data seed, training seed and fold), and from
    `stats.quality_table` its paired difference to the best peer and its share of the oracle."""
    quality = {row["model"]: row for row in quality_table(scores).iter_rows(named=True)}
    reference = scores.filter(pl.col("model") == REFERENCE)

    def versus_peer(row: dict) -> str:
        return f"{plus_minus(row['diff_mean'], row['diff_std'])} ({row['wins'] or '—'})"

    def of_oracle(row: dict) -> str:
        return "—" if not np.isfinite(row["oracle_fraction"]) else f"{row['oracle_fraction']:.0%}"

    rows = []
    for name in levers:
        row, extra = quality[name], extras[name]
        delta = paired_difference(scores.filter(pl.col("model") == name), reference,
                                  on=("data_seed", "train_seed", "fold"))
        versus_ref, won = "(reference)", "—"
        if name != REFERENCE:
            versus_ref, won = plus_minus(*mean_std(delta)), f"{int((delta > 0).sum())}/{delta.size}"
        rows.append([f"`{name}`", f"`{' '.join(LEVERS[name]) or '(base)'}`", str(row["cells"]),
                     plus_minus(row["mean"], row["std"]), versus_ref, won, versus_peer(row), f"{extra['ms']:.0f}",
                     of_oracle(row), f"{extra['closed']:.0%}", f"{extra['gate_std']:.3f}",
                     f"{extra['driver_auc']:.2f}"])
    lines = [markdown_table(["lever", "overrides", "cells", "honest score mean ± std", "paired Δ vs ref", "cells won",
                             "Δ vs best peer", "ms/step", "of oracle", "gates < thr", "gate std", "driver AUC"], rows)]
    rows = []
    for name, row in quality.items():
        if name in levers:
            continue
        is_best = name == row["best_peer"]
        rows.append([f"`{name}`", str(row["cells"]), plus_minus(row["mean"], row["std"]),
                     "(best peer)" if is_best else plus_minus(row["diff_mean"], row["diff_std"]),
                     "—" if is_best else row["wins"] or "—", "—" if name == ORACLE else of_oracle(row)])
    return lines + ["", markdown_table(["peer", "cells", "score mean ± std", "paired Δ vs best peer", "cells won",
                                        "of oracle"], rows)]


def lab(work: Path, levers: list[str], data_seeds: list[int], train_seeds: list[int], peers: list[str],
        parallel: int, base: Path = BASE_CONFIG, preset: str = PRESET, folds: int | None = None) -> str:
    """Run (or reuse) every run and return the markdown report."""
    runs = plan_runs(work, levers, data_seeds, train_seeds, peers, base, preset, folds)
    reused = [finished_summary(run.out, run.cfg) is not None for run in runs]
    todo = [run for run, done in zip(runs, reused) if not done]
    for run in todo:  # a partial or stale folder is started afresh
        if run.out.exists():
            shutil.rmtree(run.out)
    print(f"{len(todo)} runs to do, {sum(reused)} reused", flush=True)
    run_all(todo, parallel)

    tally, cells, summaries = RunTally(), [], {}
    for run, done in zip(runs, reused):
        summary = finished_summary(run.out, run.cfg)
        if summary is None:
            raise SystemExit(f"{run.out}: the run did not finish with its config")
        tally.add(done, float((summary.get("run") or {}).get("seconds") or 0.0))
        cells += summary_cells(summary, preset, run.model, run.data_seed, run.train_seed)
        summaries[(run.model, run.data_seed, run.train_seed)] = summary
    scores = pl.DataFrame(cells, schema=SCORE_SCHEMA, orient="row")
    extras = lever_extras(runs, load_config(base).train.prune_threshold)
    n_folds, split = ("", "") if folds is None else (f"{folds} ", f" with `split.n_folds={folds}`")
    lines = [f"Preset `{preset}`. Cells: {len(data_seeds)} data seeds x {len(train_seeds)} training seeds x "
             f"({n_folds}walk-forward folds + the holdout); budget `{' '.join(BUDGET)}` on `{base}`{split}; "
             f"{tally.runs} runs ({tally.reused} reused), {tally.seconds / 60:.0f} min of run time.", "",
             *render_levers(scores, levers, extras)]
    return "\n".join(lines + pruned_lines(levers, summaries, data_seeds, train_seeds)) + "\n"


def pruned_lines(levers: list[str], summaries: dict, data_seeds: list[int], train_seeds: list[int]) -> list[str]:
    """The holdout's pruned fine-tune against the unpruned holdout, for the levers that fine-tuned (both fixed
    length, so both honest)."""
    lines = []
    for name in levers:
        rows = []
        for d in data_seeds:
            for t in train_seeds:
                holdout = summaries[(name, d, t)]["folds"].get(HOLDOUT, {})
                if "pruned" in holdout:
                    rows.append((holdout["metrics"]["score"], holdout["pruned"]["metrics"]["score"],
                                 holdout["pruned"]["n_features"]))
        if rows:
            full, pruned, kept = (np.array(c, dtype=np.float64) for c in zip(*rows))
            delta = pruned - full
            lines.append(f"\n`{name}` pruned fine-tune on the holdout ({len(rows)} cells): unpruned "
                         f"{plus_minus(full.mean(), full.std())}, pruned {plus_minus(pruned.mean(), pruned.std())} "
                         f"with {kept.mean():.0f} features kept, paired Δ {plus_minus(delta.mean(), delta.std())}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (data, run folders; reused)")
    parser.add_argument("--base", type=Path, default=BASE_CONFIG, help="base config of every run (the reference)")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--jobs", type=int, default=2, help="child processes at once (one thread each)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--preset", default=PRESET, choices=LAB_PRESETS,
                        help="synthetic preset of the data (its runs go to WORK/runs-PRESET unless the default)")
    parser.add_argument("--folds", type=int, help="walk-forward folds of every run, peers included (split.n_folds; "
                        "the runs go to WORK/runs[-PRESET]-foldsN); default: the base config's")
    args = parser.parse_args(argv)
    if args.folds is not None and args.folds < 2:  # an honest walk-forward score needs the other folds
        parser.error(f"--folds: expected >= 2, got {args.folds}")
    levers = args.levers if REFERENCE in args.levers else [REFERENCE, *args.levers]
    report = lab(args.work, levers, args.data_seeds, args.train_seeds, args.peers, args.jobs, args.base, args.preset,
                 args.folds)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
