"""The lever lab: named override sets of the Transformer against a reference and the peers, on the same folds.

    python -m spread.lab.levers --work /tmp/levers [--base configs/default.yaml] [--levers ref patch16 ...]
        [--data-seeds 0 1 2] [--train-seeds 0] [--peers ridge reduced_rank regularised_prior lightgbm] [--jobs 2]
        [--out FILE.md]

Every run is a child process (`python -m spread train` or `python -m spread baseline`, OMP_NUM_THREADS=1, at most
`--jobs` at once) on the synthetic `realistic` preset at its default size, data seed by data seed, with the config
`--base` (default `BASE_CONFIG`) plus `BUDGET` (a short CPU budget and no final fit, identical for every lever) plus the lever's
overrides. A finished run folder (summary.json present, its command and the base config's text unchanged:
`lab.json`) is reused, so an interrupted lab resumes.

Only honest scores are cells: per walk-forward fold its `honest_score` (the validation score at the epoch count the
other folds choose) and the holdout's `public_leaderboard_estimate` (fixed length, epochs from the walk-forward
folds); a peer's per-fold score (its hyper-parameters are chosen on training dates only). A cell is (data seed,
training seed, fold); a lever is paired with the reference on the same cell, with the best peer (highest mean) on
the same (data seed, fold). Per lever the table gives the mean +- population std over cells, the paired delta, the
cells won, the median ms per optimiser step (epoch wall time including its validation / steps), the fraction of the
oracle's mean score on the same cells, and the gate's selection: the share of gates below `train.prune_threshold`,
the std of the gates within a fit, and the AUC of the planted drivers' features among the gates (features of the generator's driver FX pairs, the
only inputs of its regime-dependent lead-lag signal; `spread.synth.build_universe` replays the draw).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from spread.lab import REPO_ROOT
from spread.runfolder import SUMMARY_FILE
from spread.splits import HOLDOUT

PRESET = "realistic"
BASE_CONFIG = REPO_ROOT / "configs" / "default.yaml"
BUDGET = ("train.final_fit=false", "train.plots=false", "train.progress=false", "train.epochs=8",
          "train.max_steps_per_epoch=16", "train.early_stopping_patience=3")
"""The same short budget for every lever: 8 epochs of at most 16 steps, patience 3, no final fit."""
REFERENCE = "ref"
LEVERS: dict[str, tuple[str, ...]] = {
    "ref": (),
    "patch4": ("model.patch_len=4",),
    "patch16": ("model.patch_len=16",),
    "listwise": ("loss.rank_loss=listwise",),
    "window128": ("data.window=128",),
    "window256": ("data.window=256",),
    "screen_per_target": ("screen.ic_rank=per_target",),
    "lr1e-3": ("train.lr=0.001",),
    "gate_select": ("model.gate_init=0.0", "loss.gate_lambda=0.0003", "train.gate_lr_scale=100",
                    "train.finetune_pruned=true", "train.finetune_epochs=2"),
    "gate_init0": ("model.gate_init=0.0",),
    "gate_strong": ("model.gate_init=0.0", "loss.gate_lambda=0.003", "train.gate_lr_scale=100",
                    "train.finetune_pruned=true", "train.finetune_epochs=2", "train.prune_top_k=32"),
    "listwise_gate": ("loss.rank_loss=listwise", "model.gate_init=0.0", "loss.gate_lambda=0.003",
                      "train.gate_lr_scale=100"),
    "variate": ("model.tokens=variate",),
    "own": ("data.own_features=true",),
    "own_listwise": ("data.own_features=true", "loss.rank_loss=listwise"),
}
"""Lever name -> overrides on top of the base config and BUDGET (ref: the base config itself)."""
PEERS = ("ridge", "reduced_rank", "regularised_prior", "lightgbm")


def data_folder(work: Path, seed: int) -> Path:
    """The realistic preset at data seed `seed`, generated once."""
    from spread.synth import generate

    folder = work / "data" / f"{PRESET}-s{seed}"
    if not (folder / "train.csv").is_file():
        generate(folder, seed=seed, preset=PRESET, overwrite=True)
    return folder


def command(kind: str, name: str, data: Path, out: Path, seed: int, overrides: tuple[str, ...],
            base: Path = BASE_CONFIG) -> list[str]:
    head = ["train"] if kind == "lever" else ["baseline", name]
    return [sys.executable, "-m", "spread", *head, "--data", str(data), "--out", str(out), "--config", str(base),
            *BUDGET, *overrides, f"seed={seed}"]


def run_record(argv: list[str]) -> list[str]:
    """What makes a run folder reusable: its command line and the text of its base config (after --config)."""
    return [*argv[1:], Path(argv[argv.index("--config") + 1]).read_text()]


def pending(out: Path, argv: list[str]) -> bool:
    """True when `out` holds no finished run of exactly `argv` (a stale or partial folder is removed)."""
    record = out / "lab.json"
    if (out / SUMMARY_FILE).is_file() and record.is_file() and json.loads(record.read_text()) == run_record(argv):
        return False
    if out.exists():
        shutil.rmtree(out)
    return True


def run_all(jobs: list[tuple[Path, list[str]]], parallel: int) -> None:
    """Run the child processes, `parallel` at a time, one thread each; a failure stops the lab."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    queue, running = list(jobs), []
    while queue or running:
        while queue and len(running) < parallel:
            out, argv = queue.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(out.parent / f"{out.name}.log", "w")
            running.append((out, argv, subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {out}", flush=True)
        time.sleep(1.0)
        for item in list(running):
            out, argv, process, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            if process.returncode:
                raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}); see {out.parent / out.name}.log")
            (out / "lab.json").write_text(json.dumps(run_record(argv)))
            print(f"finished {out}", flush=True)


def honest_cells(summary: dict) -> dict[str, tuple[float, float]]:
    """fold -> (honest score, oracle score) of a trainer run: walk-forward honest scores and the holdout."""
    cells = {}
    for fold, result in summary["folds"].items():
        score = result.get("metrics", {}).get("score") if fold == HOLDOUT else result.get("honest_score")
        if score is not None:
            cells[fold] = (float(score), float(result.get("oracle_score", float("nan"))))
    return cells


def peer_cells(summary: dict) -> dict[str, tuple[float, float]]:
    """fold -> (score, oracle score) of a baseline run."""
    return {fold: (float(r["metrics"]["score"]), float(r.get("oracle_score", float("nan"))))
            for fold, r in summary["folds"].items()}


def step_ms(run: Path) -> float:
    """Median over epochs of the epoch's wall time (validation included) per optimiser step, in ms."""
    rows = pl.read_csv(run / "metrics.csv")
    per_step = []
    for _, fold_rows in rows.group_by("fold"):
        steps = np.diff(np.concatenate([[0], fold_rows["step"].to_numpy()]))
        per_step += [s / n for s, n in zip(fold_rows["seconds"].to_numpy(), steps) if n > 0]
    return 1e3 * statistics.median(per_step) if per_step else float("nan")


def driver_features(names: list[str], seed: int) -> np.ndarray:
    """(features,) bool: the feature is computed from one of the generator's driver FX pairs (data seed `seed`)."""
    from spread.synth import build_universe, resolve_preset

    drivers = build_universe(resolve_preset(PRESET), np.random.default_rng(seed)).drivers
    return np.array([any(f"FX_{pair}" in name for pair in drivers) for name in names])


def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half; NaN without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def gate_stats(run: Path, seed: int, threshold: float) -> dict[str, float]:
    """Share of gates below `threshold`, their spread, and the drivers' AUC, over every fit's gates."""
    table = pl.read_csv(run / "gate_weights.csv")
    folds = [c for c in table.columns if c not in ("feature", "mean")]
    drivers = driver_features(table["feature"].to_list(), seed)
    closed, spread, aucs = [], [], []
    for fold in folds:
        values = table[fold].to_numpy().astype(np.float64)
        seen = np.isfinite(values)
        closed.append(float((values[seen] < threshold).mean()))
        spread.append(float(values[seen].std()))
        aucs.append(auc(drivers[seen], values[seen]))
    return {"closed": float(np.mean(closed)), "gate_std": float(np.mean(spread)), "driver_auc": float(np.nanmean(aucs))
            if np.isfinite(aucs).any() else float("nan"), "drivers_screened": float(drivers.sum())}


def paired(cells: dict, reference: dict) -> np.ndarray:
    """Differences cell by cell over the cells both have."""
    keys = sorted(set(cells) & set(reference))
    return np.array([cells[k] - reference[k] for k in keys])


def fmt(mean: float, std: float) -> str:
    return f"{mean:+.3f} ± {std:.3f}" if np.isfinite(mean) else "—"


def lab(work: Path, levers: list[str], data_seeds: list[int], train_seeds: list[int], peers: list[str],
        parallel: int, base: Path = BASE_CONFIG) -> str:
    """Run (or reuse) every run and return the markdown report."""
    from spread.config import load_config

    jobs, runs = [], {}
    for data_seed in data_seeds:
        data = data_folder(work, data_seed)
        for name in levers:
            load_config(base, [*BUDGET, *LEVERS[name]])  # fail fast on a bad override
            for seed in train_seeds:
                out = work / "runs" / name / f"s{data_seed}" / f"t{seed}"
                argv = command("lever", name, data, out, seed, LEVERS[name], base)
                runs[(name, data_seed, seed)] = out
                if pending(out, argv):
                    jobs.append((out, argv))
        for name in [*peers, "oracle"]:
            out = work / "runs" / name / f"s{data_seed}"
            argv = command("peer", name, data, out, 0, (), base)
            runs[(name, data_seed, None)] = out
            if pending(out, argv):
                jobs.append((out, argv))
    print(f"{len(jobs)} runs to do, {len(runs) - len(jobs)} reused", flush=True)
    run_all(jobs, parallel)

    def cells_of(name: str, seeds: list) -> tuple[dict, dict]:
        scores, oracle = {}, {}
        for data_seed in data_seeds:
            for seed in seeds:
                summary = json.loads((runs[(name, data_seed, seed)] / SUMMARY_FILE).read_text())
                pick = peer_cells if seed is None else honest_cells
                for fold, (score, oracle_score) in pick(summary).items():
                    scores[(data_seed, seed, fold)], oracle[(data_seed, seed, fold)] = score, oracle_score
        return scores, oracle

    peer_scores = {name: cells_of(name, [None])[0] for name in [*peers, "oracle"]}
    oracle_by = {(d, f): v for (d, _, f), v in peer_scores["oracle"].items()}
    best_peer = max(peers, key=lambda name: np.mean(list(peer_scores[name].values()))) if peers else None
    threshold = load_config(base).train.prune_threshold
    lever_scores = {name: cells_of(name, train_seeds)[0] for name in levers}
    reference = lever_scores.get(REFERENCE, {})

    def of_oracle(scores: dict) -> str:
        oracle = [oracle_by[(d, f)] for d, _, f in scores]
        return f"{np.mean(list(scores.values())) / np.mean(oracle):.0%}" if oracle else "—"

    def versus_peer(scores: dict) -> np.ndarray:
        return np.array([s - peer_scores[best_peer][(d, None, f)] for (d, _, f), s in scores.items()])

    lines = [f"Cells: {len(data_seeds)} data seeds x {len(train_seeds)} training seeds x (walk-forward folds + the "
             f"holdout); budget `{' '.join(BUDGET)}` on `{base}`.", "",
             "| lever | overrides | cells | honest score mean ± std | paired Δ vs ref | cells won | Δ vs best peer "
             "| ms/step | of oracle | gates < thr | gate std | driver AUC |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in levers:
        scores = lever_scores[name]
        values = np.array(list(scores.values()))
        delta = paired(scores, reference) if name != REFERENCE else np.array([])
        vs_peer = versus_peer(scores) if best_peer else np.array([])
        ms = statistics.median(step_ms(runs[(name, d, t)]) for d in data_seeds for t in train_seeds)
        gates = [gate_stats(runs[(name, d, t)], d, threshold) for d in data_seeds for t in train_seeds]
        won = f"{int((delta > 0).sum())}/{len(delta)}" if len(delta) else "—"
        lines.append(
            f"| `{name}` | `{' '.join(LEVERS[name]) or '(base)'}` | {len(values)} | {fmt(values.mean(), values.std())} "
            f"| {fmt(delta.mean(), delta.std()) if len(delta) else '(reference)'} | {won} "
            f"| {fmt(vs_peer.mean(), vs_peer.std()) if len(vs_peer) else '—'} ({int((vs_peer > 0).sum())}/"
            f"{len(vs_peer)}) | {ms:.0f} | {of_oracle(scores)} | {np.mean([g['closed'] for g in gates]):.0%} "
            f"| {np.mean([g['gate_std'] for g in gates]):.3f} | {np.nanmean([g['driver_auc'] for g in gates]):.2f} |")
    lines += ["", "| peer | cells | score mean ± std | paired Δ vs best peer | cells won | of oracle |",
              "|---|---|---|---|---|---|"]
    for name in [*peers, "oracle"]:
        scores = peer_scores[name]
        values = np.array(list(scores.values()))
        delta = versus_peer(scores) if best_peer and name != best_peer else np.array([])
        won = f"{int((delta > 0).sum())}/{len(delta)}" if len(delta) else "—"
        label = "(best peer)" if name == best_peer else fmt(delta.mean(), delta.std()) if len(delta) else "—"
        lines.append(f"| `{name}` | {len(values)} | {fmt(values.mean(), values.std())} | {label} | {won} "
                     f"| {of_oracle(scores) if name != 'oracle' else '—'} |")
    pruned = pruned_lines(levers, runs, data_seeds, train_seeds)
    return "\n".join(lines + pruned) + "\n"


def pruned_lines(levers: list[str], runs: dict, data_seeds: list[int], train_seeds: list[int]) -> list[str]:
    """The holdout's pruned fine-tune against the unpruned holdout, for the levers that fine-tuned (both fixed
    length, so both honest)."""
    lines = []
    for name in levers:
        rows = []
        for d in data_seeds:
            for t in train_seeds:
                summary = json.loads((runs[(name, d, t)] / SUMMARY_FILE).read_text())
                holdout = summary["folds"].get(HOLDOUT, {})
                if "pruned" in holdout:
                    rows.append((holdout["metrics"]["score"], holdout["pruned"]["metrics"]["score"],
                                 holdout["pruned"]["n_features"], holdout.get("n_features", float("nan"))))
        if rows:
            full, pruned, kept, _ = (np.array(c, dtype=np.float64) for c in zip(*rows))
            delta = pruned - full
            lines.append(f"\n`{name}` pruned fine-tune on the holdout ({len(rows)} cells): unpruned "
                         f"{fmt(full.mean(), full.std())}, pruned {fmt(pruned.mean(), pruned.std())} with "
                         f"{kept.mean():.0f} features kept, paired Δ {fmt(delta.mean(), delta.std())}.")
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
    args = parser.parse_args(argv)
    levers = args.levers if REFERENCE in args.levers else [REFERENCE, *args.levers]
    report = lab(args.work, levers, args.data_seeds, args.train_seeds, args.peers, args.jobs, args.base)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
