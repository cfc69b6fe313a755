"""Shared fixtures: a tiny hand-written competition folder that depends on nothing but the targets formula, the
`small` synthetic preset, and the tiny-model overrides of whole training runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from spread.targets import compute_targets

TINY_RUN = [
    "data.window=8", "data.batch_size=16", "features.return_horizons=[1, 5]", "screen.min_abs_ic=0.0",
    "split.n_folds=1", "split.val_size=20", "split.step=20", "split.min_train=60",
    "model.d_model=8", "model.n_layers=1", "model.n_heads=2", "model.mlp_ratio=1", "model.time2vec_dim=2",
    "model.dropout=0.1", "train.epochs=2", "train.max_steps_per_epoch=3", "train.lr=0.001", "train.plots=false",
]
"""Overrides for a whole training run in seconds on the `small` preset (one walk-forward fold + the holdout)."""


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `small` synthetic preset (seed 0): 320 dates, 48 targets, test dates 280..319 (scored 280..304)."""
    from spread.synth import generate

    return generate(tmp_path_factory.mktemp("data") / "small", seed=0, preset="small")


@pytest.fixture(scope="module")
def single_thread():
    """Toy-sized ops gain nothing from threads, and thread contention on a busy 2-core runner costs 20x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PAIRS = [("target_0", 1, "A_Close - B_Close"), ("target_1", 1, "C_Close"), ("target_2", 2, "B_Close - A_Close"),
         ("target_3", 2, "A_Close")]


def write_tiny_competition(root: Path, n_dates: int = 30, n_test: int = 8, seed: int = 0) -> Path:
    """A valid 3-asset, 4-target competition folder with one feature that is not a price."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    prices = np.exp(np.cumsum(rng.normal(0, 0.01, size=(n_dates, 3)), axis=0)) * 100
    prices[5, 2] = np.nan  # an exchange holiday
    train = pl.DataFrame(
        {"date_id": np.arange(n_dates), "A_Close": prices[:, 0], "B_Close": prices[:, 1], "C_Close": prices[:, 2],
         "A_Volume": rng.integers(1, 1000, n_dates).astype(float)}
    )
    pairs = pl.DataFrame({"target": [p[0] for p in PAIRS], "lag": [p[1] for p in PAIRS], "pair": [p[2] for p in PAIRS]})
    labels = compute_targets(train, pairs)
    train.write_csv(root / "train.csv")
    labels.write_csv(root / "train_labels.csv")
    pairs.write_csv(root / "target_pairs.csv")
    test = train.tail(n_test).with_columns((pl.int_range(pl.len()) < n_test // 2).alias("is_scored"))
    test.write_csv(root / "test.csv")
    (root / "lagged_test_labels").mkdir(exist_ok=True)
    for lag in (1, 2):
        names = [p[0] for p in PAIRS if p[1] == lag]
        dates = test["date_id"].to_numpy()
        keys = pl.DataFrame({"date_id": dates, "label_date_id": dates - lag - 1})
        released = labels.select(["date_id", *names]).rename({"date_id": "label_date_id"})
        lagged = keys.join(released, on="label_date_id", how="left").select("date_id", *names, "label_date_id")
        lagged.write_csv(root / f"lagged_test_labels/test_labels_lag_{lag}.csv")
    return root


@pytest.fixture
def tiny_competition(tmp_path: Path) -> Path:
    return write_tiny_competition(tmp_path / "comp")
