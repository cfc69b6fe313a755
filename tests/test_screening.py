"""The per-target order of the feature screen's IC cap (`screen.ic_rank`)."""

from __future__ import annotations

import numpy as np
import pytest

from spread.errors import ConfigError
from spread.features import Panel
from spread.screening import ScreenConfig, best_target_ranks, screen_features


def panel_with_a_specialist(n_rows: int = 400, seed: int = 0) -> tuple[Panel, np.ndarray]:
    """Five targets; "broad_a" and the noisier "broad_b" correlate with four of them, "specialist" with one only."""
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(n_rows, 5))
    common = targets[:, :4].sum(axis=1)
    columns = {
        "broad_a": common + 0.5 * rng.normal(size=n_rows),
        "broad_b": common + 2.0 * rng.normal(size=n_rows),
        "specialist": targets[:, 4] + 0.3 * rng.normal(size=n_rows),
        "noise": rng.normal(size=n_rows),
    }
    return Panel(np.arange(n_rows), np.column_stack(list(columns.values())).astype(np.float32), list(columns)), targets


def test_per_target_cap_keeps_a_feature_that_matters_for_one_target_only():
    panel, targets = panel_with_a_specialist()
    rows = np.arange(len(targets))
    mean = screen_features(panel, rows, targets, ScreenConfig(min_abs_ic=0.0, ic_max_features=2))
    assert mean.keep == ["broad_a", "broad_b"]  # the specialist's mean |IC| over five targets is lower
    per_target = screen_features(panel, rows, targets, ScreenConfig(min_abs_ic=0.0, ic_max_features=2,
                                                                    ic_rank="per_target"))
    assert per_target.keep == ["broad_a", "specialist"]  # each the best feature for some target
    assert "rank 3 > cap 2" in per_target.dropped["broad_b"]
    assert per_target.scores == mean.scores  # the recorded scores stay the mean |IC|


def test_best_target_ranks_is_the_smallest_rank_over_targets():
    ics = np.array([[0.9, 0.1], [0.5, 0.2], [0.1, 0.8]])
    assert best_target_ranks(ics).tolist() == [0, 1, 0]
    assert best_target_ranks(np.zeros((3, 0))).tolist() == [0, 0, 0]


def test_unknown_ic_rank_is_a_config_error():
    with pytest.raises(ConfigError, match="screen.ic_rank"):
        ScreenConfig(ic_rank="max")
