"""The lever lab's bookkeeping: honest cells, pairing, step times, the gates' driver AUC and the run cache."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from spread.config import load_config
from spread.lab import levers


def test_honest_cells_take_the_walk_forward_honest_scores_and_the_holdout():
    summary = {"folds": {
        "fold0": {"metrics": {"score": 0.9}, "honest_score": 0.4, "oracle_score": 0.8},
        "fold1": {"metrics": {"score": 0.7}, "honest_score": None, "oracle_score": 0.7},  # a single fold: no cell
        "holdout": {"metrics": {"score": 0.5}, "oracle_score": 0.6},
    }}
    assert levers.honest_cells(summary) == {"fold0": (0.4, 0.8), "holdout": (0.5, 0.6)}
    peer = {"folds": {"fold0": {"metrics": {"score": 0.2}, "oracle_score": 0.8}}}
    assert levers.peer_cells(peer) == {"fold0": (0.2, 0.8)}


def test_paired_differences_use_the_shared_cells_only():
    cells = {("a", 0): 0.5, ("b", 0): 0.1, ("c", 0): 0.3}
    reference = {("a", 0): 0.2, ("b", 0): 0.4}
    assert levers.paired(cells, reference) == pytest.approx([0.3, -0.3])


def test_auc_counts_ties_as_half():
    positive = np.array([True, True, False, False])
    assert levers.auc(positive, np.array([0.9, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert np.isnan(levers.auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_driver_features_replay_the_generators_draw():
    from spread.synth import build_universe, resolve_preset

    drivers = build_universe(resolve_preset("realistic"), np.random.default_rng(1)).drivers
    names = [f"FX_{drivers[0]}_ret5", "FX_NOTADRIVER_ret1", f"FX_{drivers[2]}_missing"]
    assert levers.driver_features(names, 1).tolist() == [True, False, True]


def test_step_ms_and_gate_stats_read_the_run_folder(tmp_path):
    pl.DataFrame({"fold": ["fold0", "fold0", "holdout"], "step": [10, 20, 5], "seconds": [1.0, 3.0, 1.0]}).write_csv(
        tmp_path / "metrics.csv")
    assert levers.step_ms(tmp_path) == pytest.approx(200.0)  # median of 100, 300 and 200 ms per step
    names = ["FX_A_ret1", "FX_B_ret1", "FX_C_ret1"]
    pl.DataFrame({"feature": names, "fold0": [0.9, 0.01, None], "mean": [0.9, 0.01, None]}).write_csv(
        tmp_path / "gate_weights.csv")
    stats = levers.gate_stats(tmp_path, seed=0, threshold=0.05)
    assert stats["closed"] == pytest.approx(0.5) and stats["gate_std"] == pytest.approx(0.445)


def test_a_run_is_reused_only_when_finished_with_the_same_command(tmp_path):
    out = tmp_path / "run"
    argv = ["python", "-m", "spread", "train", "--config", str(levers.BASE_CONFIG), "seed=0"]
    assert levers.pending(out, argv)
    out.mkdir()
    (out / "partial.txt").write_text("x")
    assert levers.pending(out, argv) and not out.exists()  # a partial folder is removed
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "lab.json").write_text(json.dumps(levers.run_record(argv)))
    assert not levers.pending(out, argv)
    assert levers.pending(out, [*argv, "model.patch_len=4"])


@pytest.mark.parametrize("name", sorted(levers.LEVERS))
def test_every_lever_is_a_valid_config(name):
    cfg = load_config(levers.BASE_CONFIG, [*levers.BUDGET, *levers.LEVERS[name]])
    assert cfg.train.final_fit is False and cfg.train.max_steps_per_epoch > 0
