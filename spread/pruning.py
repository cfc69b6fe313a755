"""Gate analysis after training: per-feature gate values, a pruned feature list, and the masks to fine-tune with.

The model multiplies every input feature by a learnt gate g in [0, 1] that an L1 penalty pushes towards 0
(ROADMAP "Feature Management & Selection"). After training, the gate values say which inputs the model uses.
This module tabulates them over folds (`gate_weights.csv`, sorted by the mean gate, a fold's column empty for a
feature its screening dropped), and selects the inputs to keep, either the `top_k` largest gates or those at least
`threshold`. Fine-tuning on the pruned inputs freezes the gate mask of the pruned features to zero
(`FeatureGate.freeze_mask`) instead of rebuilding a narrower model: the weights of the kept features stay where they
are, and the checkpoint's `gate_mask` tells the predictor which inputs are live.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from spread.runfolder import GATE_FILE, PRUNED_FILE, atomic_write


def select_features(gate: np.ndarray, threshold: float, top_k: int = 0) -> np.ndarray:
    """Boolean keep-mask over features: the `top_k` largest gates when top_k > 0, else gates >= threshold.

    NaN gates (features absent from a fold) are never kept; at least the largest finite gate is always kept so
    that a pruned model has an input.
    """
    values = np.asarray(gate, dtype=np.float64)
    finite = np.isfinite(values)
    keep = np.zeros(values.shape, dtype=bool)
    if not finite.any():
        return keep
    ranked = np.where(finite, values, -np.inf)
    order = np.argsort(-ranked, kind="stable")
    if top_k > 0:
        keep[order[: min(top_k, int(finite.sum()))]] = True
    else:
        keep = finite & (values >= threshold)
    keep[order[0]] = True
    return keep


def gate_table(fold_gates: dict[str, tuple[list[str], np.ndarray]]) -> pl.DataFrame:
    """One row per feature seen in any fold: its gate in each fold (null where screened out) and the mean.

    `fold_gates` maps a fold name to (feature names, gate values); rows are sorted by the mean, largest first,
    ties by feature name.
    """
    names: dict[str, None] = {}
    for features, _ in fold_gates.values():
        names.update(dict.fromkeys(features))
    columns: dict[str, list[float]] = {"feature": list(names)}
    for fold, (features, values) in fold_gates.items():
        by_name = dict(zip(features, np.asarray(values, dtype=np.float64).tolist()))
        columns[fold] = [by_name.get(name) for name in names]
    matrix = np.array([columns[fold] for fold in fold_gates], dtype=np.float64).reshape(len(fold_gates), len(names))
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(matrix).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(matrix, axis=0) / np.maximum(counts, 1), np.nan)
    schema = {name: pl.String if name == "feature" else pl.Float64 for name in columns}
    table = pl.DataFrame(columns, schema=schema)
    table = table.with_columns(pl.Series("mean", mean, dtype=pl.Float64, nan_to_null=True))
    return table.sort(["mean", "feature"], descending=[True, False], nulls_last=True)


def write_gate_analysis(run_dir: str | Path, table: pl.DataFrame, threshold: float, top_k: int) -> list[str]:
    """Write gate_weights.csv and pruned_features.csv; return the names the mean gate keeps.

    pruned_features.csv is the pruning decision: every feature (gate order) with its mean gate and `kept`
    (true: kept by train.prune_threshold / train.prune_top_k; false: pruned).
    """
    run_dir = Path(run_dir)
    mean = table["mean"].fill_null(float("nan")).to_numpy()
    decision = table.select("feature", "mean").with_columns(pl.Series("kept", select_features(mean, threshold, top_k)))
    atomic_write(run_dir / GATE_FILE, lambda tmp: table.write_csv(tmp))
    atomic_write(run_dir / PRUNED_FILE, lambda tmp: decision.write_csv(tmp))
    return decision.filter(pl.col("kept"))["feature"].to_list()
