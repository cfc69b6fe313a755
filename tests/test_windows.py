"""Rolling windows, loaders, per-fold preparation and the inference path on the small synthetic competition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from spread.competition import Competition, load_competition
from spread.errors import ArtifactError, ConfigError, DataError
from spread.features import FeatureConfig, released
from spread.scaling import Scaler, ScalingConfig
from spread.screening import ScreenConfig
from spread.splits import SplitConfig, make_folds
from spread.synth import generate
from spread.target_features import OWN_FEATURES, own_features, own_lookback
from spread.windows import (
    DataConfig,
    WindowDataset,
    WindowSource,
    competition_panel,
    make_loader,
    prepare_fold,
    tail_rows,
    window_for_latest,
)

DATA = DataConfig(window=24, time_scale=100.0, batch_size=8)
SPLIT = SplitConfig(n_folds=1, val_size=40, step=40, min_train=60)


@pytest.fixture(scope="module")
def comp(tmp_path_factory) -> Competition:
    return load_competition(generate(tmp_path_factory.mktemp("synth") / "c", seed=1, preset="small"))


@pytest.fixture(scope="module")
def holdout(comp):
    folds = make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, SPLIT, comp.scored_dates)
    return folds[-1], prepare_fold(comp, folds[-1], FeatureConfig(), ScreenConfig(), ScalingConfig(), DATA)


def test_windows_are_padded_views_of_one_tensor():
    features = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2)
    features[1, 0] = float("nan")
    targets = np.array([[1.0, np.nan]] * 5)
    dataset = WindowDataset(features, np.arange(10, 15), targets, np.array([0, 1, 4]), window=3, time_scale=10.0)
    first = dataset[0]
    np.testing.assert_array_equal(first["x"].numpy(), [[0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(first["valid"].numpy(), [False, False, True])
    np.testing.assert_allclose(first["t"].numpy(), [0.8, 0.9, 1.0])
    second = dataset[1]
    np.testing.assert_array_equal(second["x"].numpy(), [[0, 0], [0, 1], [0, 3]])  # NaN -> 0
    last = dataset[2]
    np.testing.assert_array_equal(last["x"].numpy(), [[4, 5], [6, 7], [8, 9]])
    assert last["valid"].all() and int(last["date_id"]) == 14 and last["date_id"].dtype == torch.int64
    np.testing.assert_array_equal(last["y"].numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(last["y_mask"].numpy(), [True, False])
    storage = dataset.source.padded.untyped_storage().data_ptr()
    assert all(dataset[i]["x"].untyped_storage().data_ptr() == storage for i in range(len(dataset)))
    assert dataset.source.padded.shape == (5 + 3 - 1, 2)


def test_window_dataset_checks_its_inputs():
    features = torch.zeros(5, 2)
    with pytest.raises(DataError):
        WindowDataset(features, np.arange(5), None, np.array([5]), window=3, time_scale=1.0)
    with pytest.raises(DataError):
        WindowDataset(features, np.array([0, 1, 2, 4, 5]), None, np.array([0]), window=3, time_scale=1.0)
    with pytest.raises(DataError):
        WindowDataset(features, np.arange(5), np.zeros((4, 1)), np.array([0]), window=3, time_scale=1.0)
    source = WindowSource.from_features(features, np.arange(5), 3, 1.0)
    with pytest.raises(ConfigError):
        WindowDataset(source, np.arange(5), None, np.array([0]), window=4, time_scale=1.0)
    with pytest.raises(ConfigError):
        DataConfig(window=0)


def test_loader_shuffles_deterministically_by_seed():
    dataset = WindowDataset(torch.randn(40, 3), np.arange(40), None, np.arange(40), window=4, time_scale=1.0)

    def order(seed: int) -> list[int]:
        return torch.cat([b["date_id"] for b in make_loader(dataset, 8, shuffle=True, seed=seed)]).tolist()

    assert order(3) == order(3) and order(3) != order(4) and sorted(order(3)) == list(range(40))
    batches = list(make_loader(dataset, 16, shuffle=False, seed=0, drop_last=True))
    assert len(batches) == 2 and batches[0]["x"].shape == (16, 4, 3) and batches[0]["t"].shape == (16, 4)


def test_prepare_fold_uses_training_rows_and_released_labels_only(comp, holdout):
    fold, data = holdout
    assert fold.val_dates == (comp.scored_dates[0], comp.scored_dates[-1])
    train_dates = data.train.date_id.numpy()
    assert train_dates.min() >= fold.train_dates[0] and train_dates.max() <= fold.train_dates[1]
    val_dates = data.val.date_id.numpy()
    assert val_dates.min() >= fold.val_dates[0] and val_dates.max() <= fold.val_dates[1]
    assert data.feature_names == data.scaler.names == data.screen.keep
    assert data.train.source is data.val.source  # one tensor for both splits
    batch = next(iter(make_loader(data.train, 16, shuffle=True, seed=0)))
    assert batch["x"].shape == (16, DATA.window, len(data.feature_names))
    assert torch.isfinite(batch["x"]).all() and batch["x"].abs().max() <= ScalingConfig().clip
    assert batch["y"].shape == batch["y_mask"].shape == (16, len(comp.target_names))
    for i in range(len(data.train)):  # every training label shown was released by the cutoff
        item = data.train[i]
        allowed = released(np.array([int(item["date_id"])]), comp.target_lags, fold.train_cutoff)[0]
        assert not (item["y_mask"].numpy() & ~allowed).any()


def test_prepare_fold_refuses_a_fold_past_train_end(comp, holdout):
    fold, _ = holdout
    with pytest.raises(ConfigError, match="train_end"):
        prepare_fold(comp, fold, FeatureConfig(), ScreenConfig(), ScalingConfig(),
                     DataConfig(window=24, train_end=fold.train_cutoff - 1))


def revealed_store(comp: Competition, today: int) -> pl.DataFrame:
    """What the predictor's label store holds on `today`: each lag's labels released by then (the lag batches)."""
    labels = comp.labels.filter(pl.col("date_id") <= today)
    dates = labels["date_id"].to_numpy()
    known = released(dates, comp.target_lags, today)
    columns = [pl.Series(name, np.where(known[:, j], labels[name].to_numpy(), np.nan), nan_to_null=True)
               for j, name in enumerate(comp.target_names)]
    return pl.DataFrame([labels["date_id"], *columns])


def test_window_for_latest_equals_the_validation_sample(comp, holdout, tmp_path: Path):
    """The predictor's path (history up to t, label store of t, persisted scaler) gives the training path's input."""
    fold, data = holdout
    data.scaler.save(tmp_path / "scaler.json")
    scaler = Scaler.load(tmp_path / "scaler.json")
    for index in (0, len(data.val) // 2, len(data.val) - 1):
        sample = data.val[index]
        today = int(sample["date_id"])
        history = comp.train.filter(pl.col("date_id") <= today)
        batch = window_for_latest(history, revealed_store(comp, today), comp.pairs, FeatureConfig(), scaler,
                                  data.feature_names, DATA)
        assert batch["x"].shape == (1, DATA.window, len(data.feature_names))
        for key in ("x", "t", "valid", "date_id"):
            torch.testing.assert_close(batch[key][0], sample[key], rtol=0, atol=0)
    with pytest.raises(ArtifactError):
        window_for_latest(comp.train, None, comp.pairs, FeatureConfig(), scaler, data.feature_names[1:], DATA)


def test_panel_can_be_built_once_for_all_folds(comp):
    folds = make_folds(comp.train["date_id"].to_numpy(), comp.target_lags, SPLIT, comp.scored_dates)
    panel = competition_panel(comp, FeatureConfig())
    reused = prepare_fold(comp, folds[0], FeatureConfig(), ScreenConfig(), ScalingConfig(), DATA, panel=panel)
    fresh = prepare_fold(comp, folds[0], FeatureConfig(), ScreenConfig(), ScalingConfig(), DATA)
    assert reused.screen == fresh.screen
    assert torch.equal(reused.train.source.padded, fresh.train.source.padded)
    assert reused.fold.name == "fold0" and len(reused.val) > 0


OWN_DATA = DataConfig(window=24, time_scale=100.0, batch_size=8, own_features=True)


@pytest.fixture(scope="module")
def holdout_own(comp, holdout):
    fold, _ = holdout
    return prepare_fold(comp, fold, FeatureConfig(), ScreenConfig(), ScalingConfig(), OWN_DATA)


def test_own_features_travel_beside_the_window_scaled_on_training_rows(comp, holdout, holdout_own):
    fold, plain = holdout
    data = holdout_own
    n_targets, n_own = len(comp.target_names), len(OWN_FEATURES)
    assert OWN_DATA.own_channels() == 2 * n_own and DATA.own_channels() == 0
    for dataset, other in ((data.train, plain.train), (data.val, plain.val)):
        sample, before = dataset[3], other[3]
        assert sample["own"].shape == (n_targets, 2 * n_own) and "own" not in before
        for key in before:  # the window itself is unchanged
            torch.testing.assert_close(sample[key], before[key], rtol=0, atol=0)
    batch = next(iter(make_loader(data.train, 4, shuffle=False, seed=0)))
    assert batch["own"].shape == (4, n_targets, 2 * n_own)
    values = own_features(comp.train, comp.labels, comp.pairs, FeatureConfig().ffill_limit)  # (T, N, K)
    train_rows = np.flatnonzero((comp.train["date_id"].to_numpy() >= fold.train_dates[0])
                                & (comp.train["date_id"].to_numpy() <= fold.train_dates[1]))
    expected = Scaler.fit(values[train_rows].reshape(len(train_rows), -1), data.own_scaler.names, ScalingConfig())
    np.testing.assert_array_equal(data.own_scaler.center, expected.center)
    np.testing.assert_array_equal(data.own_scaler.scale, expected.scale)
    row = int(data.val.rows[3])
    own = data.val[3]["own"].numpy()
    np.testing.assert_array_equal(own[:, n_own:], np.isnan(values[row]))  # missing flags
    j, k = 0, OWN_FEATURES.index("spread_ret5")
    scaled = (values[row, j, k] - expected.center[j * n_own + k]) / expected.scale[j * n_own + k]
    assert own[j, k] == pytest.approx(np.clip(np.nan_to_num(scaled), -5, 5), rel=1e-5)


def test_window_for_latest_gives_the_validation_samples_own_features(comp, holdout_own, tmp_path: Path):
    data = holdout_own
    data.own_scaler.save(tmp_path / "own.json")
    own_scaler = Scaler.load(tmp_path / "own.json")
    for index in (0, len(data.val) - 1):
        sample = data.val[index]
        today = int(sample["date_id"])
        history = comp.train.filter(pl.col("date_id") <= today)
        batch = window_for_latest(history, revealed_store(comp, today), comp.pairs, FeatureConfig(), data.scaler,
                                  data.feature_names, OWN_DATA, own_scaler)
        for key in ("x", "t", "valid", "date_id"):
            torch.testing.assert_close(batch[key][0], sample[key], rtol=0, atol=0)
        torch.testing.assert_close(batch["own"][0], sample["own"], rtol=0, atol=1e-5)
    short = FeatureConfig(return_horizons=[1, 5])  # a panel lookback below the own features'
    assert tail_rows(short, OWN_DATA) == 24 + own_lookback(short.ffill_limit) > tail_rows(short, DATA)
    with pytest.raises(ArtifactError, match="own features"):
        window_for_latest(comp.train, comp.labels, comp.pairs, FeatureConfig(), data.scaler, data.feature_names,
                          OWN_DATA)
