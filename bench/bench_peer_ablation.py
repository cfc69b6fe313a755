"""What carries the LightGBM peer's score on the `realistic` preset? Its features taken away one group at a time.

The `lightgbm` peer (`spread.lab.baselines.predict_lightgbm`) reads, per (date, target) row, the target's own
features (`spread.target_features`: its spread's returns and volatilities, its released labels' last value, rolling
means and stds), its mean daily rank over the fold's training dates (`mean_rank`, the constant prior), its lag and
its id (a categorical feature). Each variant here refits the same booster (`LGBM_PARAMS`, a fixed `--rounds`, seed
0, target the centred daily rank) without one group:

- `full`: every feature (the peer itself, at a fixed round count instead of one chosen on an inner split);
- `no_prior` / `no_target` / `no_prior_target`: without the mean rank, the target id, or both (what is left of the
  per-target constant is then nothing);
- `labels_only` / `legs_only`: the released-label features, or the leg features, with the mean rank, lag and id;
- `raw_target`: trained on each label over its lag's training std instead of its centred daily rank.

and three pooled ridge regressions in the same long format (target: the centred daily rank; own features scaled
per target and feature on the training rows, NaN -> 0, by the Transformer's own `spread.windows.fit_own_scaler`
and `own_inputs`, without the missing flags; penalty 1e-3 per row):
- `ridge prior only`: the mean rank z-scored across targets, a constant ranking every day (the `mean_rank` peer's);
- `ridge own only`: the own features;
- `ridge own + prior`: both.

Cells are data seed x fold of the walk-forward split the lever lab uses with `--folds` (`split.n_folds` walk-forward
folds of 90 dates + the holdout), on the lab's data folders (`spread.lab.levers.data_folder`, generated when
missing). The report gives each variant's mean, the paired difference against `full` and the cells won.

    python bench/bench_peer_ablation.py [--seeds 0 1 2] [--folds 6] [--work /tmp/levers_new] [--rounds 100]
        [--out bench/PEER_ABLATION.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spread.competition import load_competition  # noqa: E402
from spread.config import load_config  # noqa: E402
from spread.lab.baselines import LGBM_PARAMS, _lightgbm, fold_context, long_features  # noqa: E402
from spread.lab.levers import data_folder  # noqa: E402
from spread.metrics import validation_metrics  # noqa: E402
from spread.prior import daily_ranks, zscore  # noqa: E402
from spread.trainer import competition_folds  # noqa: E402
from spread.windows import competition_panel, fit_own_scaler, label_matrix, lag_scale, own_inputs  # noqa: E402

CONSTANT = ("mean_rank", "lag", "target")
"""The features of `long_features` after the own features."""
DROPPED = {
    "full": (),
    "no_prior": ("mean_rank",),
    "no_target": ("target",),
    "no_prior_target": ("mean_rank", "target"),
    "labels_only": "legs",
    "legs_only": "labels",
    "raw_target": (),
}
"""LightGBM variant -> the features it goes without ("legs" / "labels": every own feature of that kind)."""
RIDGE_VARIANTS = ("ridge prior only", "ridge own only", "ridge own + prior")
RIDGE_PENALTY = 1e-3
"""Ridge penalty per training row."""


def kept(names: list[str], variant: str) -> list[int]:
    """Indices of the features of `names` the LightGBM variant reads."""
    dropped = DROPPED[variant]
    if dropped == "legs":
        return [i for i, name in enumerate(names) if name.startswith("label") or name in CONSTANT]
    if dropped == "labels":
        return [i for i, name in enumerate(names) if not name.startswith("label")]
    return [i for i, name in enumerate(names) if name not in dropped]


def lightgbm_score(ctx, names: list[str], features: np.ndarray, variant: str, rounds: int) -> float:
    """Validation score of one LightGBM variant fitted on the fold's training rows."""
    lightgbm = _lightgbm()
    columns = kept(names, variant)
    names = [names[i] for i in columns]
    train_labels = ctx.known[ctx.train_rows]  # (dates, N)
    if variant == "raw_target":
        target = (train_labels / lag_scale(train_labels, ctx.comp.target_lags)).ravel()
    else:
        target = (daily_ranks(train_labels) - 0.5).ravel()
    rows = features[ctx.train_rows][:, :, columns].reshape(-1, len(columns))
    known = np.isfinite(target)
    categorical = ["target"] if "target" in names else []
    data = lightgbm.Dataset(rows[known], target[known], feature_name=names, categorical_feature=categorical,
                            free_raw_data=True)
    booster = lightgbm.train({**LGBM_PARAMS, "seed": 0}, data, num_boost_round=rounds)
    pred = booster.predict(features[ctx.val_rows][:, :, columns].reshape(-1, len(columns)))
    return validation_metrics(ctx.known[ctx.val_rows], pred.reshape(len(ctx.val_rows), -1),
                              ctx.comp.target_lags)["score"]


def ridge_scores(ctx, features: np.ndarray) -> dict[str, float]:
    """Validation scores of the three pooled ridge variants."""
    values = features[:, :, : -len(CONSTANT)]  # (T, N, K) the own features
    scaler = fit_own_scaler(values[ctx.train_rows], ctx.comp.target_names, ctx.cfg.scaling)
    own = own_inputs(values, scaler).numpy()[:, :, : values.shape[2]].astype(np.float64)  # (T, N, K) scaled values
    prior = np.broadcast_to(zscore(ctx.prior), own.shape[:2])[..., None]  # (T, N, 1)
    inputs = dict(zip(RIDGE_VARIANTS, (prior, own, np.concatenate([own, prior], axis=2))))
    target = (daily_ranks(ctx.known[ctx.train_rows]) - 0.5).ravel()
    known = np.isfinite(target)
    scores = {}
    for name, x in inputs.items():
        rows = x[ctx.train_rows].reshape(-1, x.shape[2])[known]
        weights = np.linalg.solve(rows.T @ rows + RIDGE_PENALTY * len(rows) * np.eye(rows.shape[1]),
                                  rows.T @ target[known])
        scores[name] = validation_metrics(ctx.known[ctx.val_rows], x[ctx.val_rows] @ weights,
                                          ctx.comp.target_lags)["score"]
    return scores


def report(cells: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    full = cells["full"]
    keys = list(full)
    lines = [
        "### What carries the LightGBM peer's score (bench/bench_peer_ablation.py)",
        "",
        f"The `lightgbm` peer refitted without one feature group at a time ({args.rounds} rounds, seed 0), and "
        "pooled long-format ridge regressions on the same features; see the script's docstring. "
        f"{len(keys)} cells (data seeds {' '.join(map(str, args.seeds))} x {args.folds} walk-forward folds + the "
        "holdout). `python bench/bench_peer_ablation.py --seeds "
        f"{' '.join(map(str, args.seeds))} --folds {args.folds}`.",
        "",
        "| variant | score mean ± std | paired Δ vs full | cells won |",
        "|---|---|---|---|",
    ]
    for name, scores in cells.items():
        values = np.array([scores[key] for key in keys])
        delta = values - np.array([full[key] for key in keys])
        paired = "—" if name == "full" else f"{delta.mean():+.3f} ± {delta.std():.3f}"
        won = "—" if name == "full" else f"{int((delta > 0).sum())}/{len(keys)}"
        lines.append(f"| {name} | {values.mean():+.3f} ± {values.std():.3f} | {paired} | {won} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--work", type=Path, default=Path("/tmp/levers_new"))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "PEER_ABLATION.md")
    args = parser.parse_args(argv)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
                      [f"split.n_folds={args.folds}"])
    cells: dict[str, dict[str, float]] = {name: {} for name in (*DROPPED, *RIDGE_VARIANTS)}
    for seed in args.seeds:
        comp = load_competition(data_folder(args.work, seed), require_test=False)
        panel = competition_panel(comp, cfg.features)
        labels = label_matrix(comp.labels, panel.date_ids, comp.target_names).astype(np.float64)
        for fold in competition_folds(comp, cfg):
            ctx = fold_context(comp, cfg, fold, panel, labels)
            names, features = long_features(ctx)
            cell = f"s{seed}/{fold.name}"
            for variant in DROPPED:
                cells[variant][cell] = lightgbm_score(ctx, names, features, variant, args.rounds)
            for name, score in ridge_scores(ctx, features).items():
                cells[name][cell] = score
            print(cell, " ".join(f"{name}={scores[cell]:.3f}" for name, scores in cells.items()), flush=True)
    args.out.write_text(report(cells, args))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
