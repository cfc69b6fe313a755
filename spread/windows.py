"""Rolling windows over one contiguous feature tensor, the per-fold glue, and the matching inference path.

A sample at date t is the scaled feature rows t - L + 1 .. t, the Time2Vec inputs date_id / time_scale of those
rows (Kazemi et al. 2019, "Time2Vec: Learning a Vector Representation of Time"), a validity mask, and the N labels
of date t with their NaN mask. `WindowSource` keeps ONE (T + L - 1, F) float32 tensor (L - 1 zero rows, then the
features with NaN replaced by 0, the scaled centre; missing flags among the features say where values were
absent); every window is a slice view of it, so memory is O(T x F) whatever the number of samples, and datasets
of different folds' splits share it.

`make_loader` is the one DataLoader (training, validation, tests, bench): shuffled, it serves this rank's share of
the permutation drawn from (seed, epoch) (`EpochSampler`), so the order depends only on those and the ranks' batches
together are the single-process batch. `prepare_fold` screens and scales on the fold's training rows only and masks
every training label that is not released by the fold's cutoff; `target_scale` is the per-lag std of those labels.
`window_for_latest` serves the predictor with the same code: build the panel on the last L + lookback raw rows,
select and scale with the stored statistics, slice the last window.

With `data.own_features` a sample also carries "own" (N, 2K): every target's own features on the sample's date
(`spread.target_features`), scaled per target and feature with statistics of the fold's training rows
(`fit_own_scaler`, persisted beside the feature scaler), NaN -> 0, then their missing flags (`own_inputs`, used by
training, validation and serving alike). Off, samples and batches are exactly those of before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from spread.competition import Competition
from spread.errors import ArtifactError, ConfigError, DataError, check_range
from spread.features import FeatureConfig, Panel, build_panel, panel_inputs, released
from spread.scaling import Scaler, ScalingConfig
from spread.screening import ScreenConfig, ScreenResult, screen_features, training_rows
from spread.splits import Fold
from spread.target_features import OWN_FEATURES, leg_columns, own_features, own_lookback, own_scaler_names

ROW_CHUNK = 64
"""Rows copied at once into the window tensor (bounds the temporaries of selecting, scaling and NaN filling)."""


@dataclass
class DataConfig:
    """Windows, time inputs, batching and the training cut-off."""

    window: int = 192
    """L: feature rows per sample (the sample's date and the L - 1 before it)."""
    time_scale: float = 1000.0
    """Time2Vec input of a row = date_id / time_scale."""
    train_end: int | None = None
    """Last date_id whose raw rows and labels training may use (None: no limit); later data only scores."""
    batch_size: int = 32
    """Samples per batch."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    own_features: bool = False
    """Carry each target's own features (`spread.target_features`, on the window's latest row, scaled per target
    and feature on the fold's training rows, NaN -> 0, plus a missing flag each) beside the window as batch key
    "own" (B, N, 2K); the model then adds a per-target head reading them (`model.target_head_dim`)."""

    def __post_init__(self) -> None:
        check_range("data", "window", self.window, low=1)
        check_range("data", "batch_size", self.batch_size, low=1)
        check_range("data", "num_workers", self.num_workers, low=0)
        check_range("data", "time_scale", self.time_scale, low=0, low_open=True)

    def own_channels(self) -> int:
        """Width of a target's "own" input: K scaled own features and their K missing flags (0: option off)."""
        return 2 * len(OWN_FEATURES) if self.own_features else 0


def tail_rows(feature_cfg: FeatureConfig, data_cfg: DataConfig) -> int:
    """Raw rows the window of the latest date needs: L + the longest lookback of its inputs."""
    lookback = feature_cfg.lookback()
    if data_cfg.own_features:
        lookback = max(lookback, own_lookback(feature_cfg.ffill_limit))
    return data_cfg.window + lookback


class WindowSource:
    """One contiguous padded tensor of features with its time inputs and validity, shared by datasets."""

    def __init__(self, date_ids: np.ndarray, n_features: int, window: int, time_scale: float):
        date_ids = np.asarray(date_ids, dtype=np.int64)
        if len(date_ids) == 0 or np.any(np.diff(date_ids) != 1):
            raise DataError("windows: date_ids must be non-empty consecutive integers")
        self.date_ids = date_ids
        self.window = window
        self.time_scale = time_scale
        n_rows = len(date_ids) + window - 1
        self.padded = torch.from_numpy(np.zeros((n_rows, n_features), dtype=np.float32))
        padded_dates = np.arange(date_ids[0] - window + 1, date_ids[-1] + 1)
        self.time = torch.from_numpy((padded_dates / time_scale).astype(np.float32))
        self.valid = torch.from_numpy(np.arange(n_rows) >= window - 1)
        self.own: torch.Tensor | None = None
        """(T, N, 2K) each target's own inputs on each (unpadded) row (`own_inputs`), or None when not carried."""

    @property
    def body(self) -> np.ndarray:
        """(T, F) numpy view of the non-padding rows, for filling in place."""
        return self.padded.numpy()[self.window - 1 :]

    def write(self, start: int, rows: np.ndarray) -> None:
        """Store feature rows from row `start` on, NaN replaced by 0 (the centre once scaled)."""
        self.body[start : start + len(rows)] = np.nan_to_num(rows, nan=0.0)

    @classmethod
    def from_features(
        cls, features: torch.Tensor | np.ndarray, date_ids: np.ndarray, window: int, time_scale: float
    ) -> WindowSource:
        values = features.numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        source = cls(date_ids, values.shape[1], window, time_scale)
        if len(values) != len(source.date_ids):
            raise DataError(f"windows: {len(values)} feature rows for {len(source.date_ids)} date_ids")
        for start in range(0, len(values), ROW_CHUNK):
            source.write(start, values[start : start + ROW_CHUNK])
        return source

    def window_at(self, row: int) -> slice:
        """Padded-tensor rows of the window ending at feature row `row`."""
        return slice(row, row + self.window)


class WindowDataset(Dataset):
    """Samples (window, time inputs, validity, labels, label mask, date_id) at chosen rows of a feature panel."""

    def __init__(
        self,
        features: torch.Tensor | np.ndarray | WindowSource,
        date_ids: np.ndarray,
        targets: np.ndarray | None,
        rows: np.ndarray,
        window: int,
        time_scale: float,
    ):
        """features: (T, F) float32 scaled features with NaN (copied once into a padded tensor), or a
        `WindowSource` to share; targets: (T, N) labels of every row (NaN where unknown; kept by reference when
        already float32) or None; rows: feature rows of the samples."""
        if isinstance(features, WindowSource):
            source = features
            same_dates = np.array_equal(source.date_ids, date_ids)
            if source.window != window or source.time_scale != time_scale or not same_dates:
                raise ConfigError("windows: the shared WindowSource has other date_ids, window or time_scale")
        else:
            source = WindowSource.from_features(features, date_ids, window, time_scale)
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        n_dates = len(source.date_ids)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n_dates):
            raise DataError(f"windows: sample rows must lie in 0..{n_dates - 1}")
        self.date_id = torch.from_numpy(source.date_ids[self.rows])
        self.targets = None
        if targets is not None:
            if len(targets) != n_dates:
                raise DataError(f"windows: {len(targets)} target rows for {n_dates} feature rows")
            self.targets = torch.from_numpy(np.asarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One sample; its window, time inputs and validity are views of the shared tensors."""
        row = int(self.rows[index])
        window = self.source.window_at(row)
        sample = {
            "x": self.source.padded[window],
            "t": self.source.time[window],
            "valid": self.source.valid[window],
            "date_id": self.date_id[index],
        }
        if self.source.own is not None:
            sample["own"] = self.source.own[row]  # (N, 2K), the window's latest row
        if self.targets is not None:
            labels = self.targets[row]
            sample["y_mask"] = torch.isfinite(labels)
            sample["y"] = torch.nan_to_num(labels, nan=0.0)
        return sample


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation drawn from (seed, epoch): positions rank, rank + W, rank + 2W, ...

    The permutation is padded (by repeating its start) to a multiple of the world size, so every rank runs the
    same number of steps; with the per-rank batch = global batch / W, the ranks' k-th batches together are the
    single-process k-th batch (DistributedSampler interleaving).
    """

    def __init__(self, n_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_samples, self.rank, self.world_size = n_samples, rank, world_size
        generator = torch.Generator()
        generator.manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n_samples, generator=generator).tolist()
        padded = math.ceil(n_samples / world_size) * world_size
        order += order[: padded - n_samples]
        self.indices = order[rank::world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The one DataLoader of the project (training, validation, tests, bench).

    shuffle: this rank's share of the permutation drawn from (seed, epoch) (`EpochSampler`), so the order depends
    only on those; else the samples in order (one process).
    """
    sampler = EpochSampler(len(ds), seed, epoch, rank, world_size) if shuffle else None
    return DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
        pin_memory=pin_memory, persistent_workers=num_workers > 0,
    )


def label_matrix(labels: pl.DataFrame, date_ids: np.ndarray, target_names: Sequence[str]) -> np.ndarray:
    """(T, N) float32 labels on the rows of `date_ids` (NaN where the frame has no value)."""
    missing = [name for name in target_names if name not in labels.columns]
    if missing:
        raise DataError(f"labels: missing target column(s) {missing[:10]}")
    out = np.full((len(date_ids), len(target_names)), np.nan, dtype=np.float32)
    rows = labels["date_id"].cast(pl.Int64).to_numpy() - date_ids[0]
    inside = (rows >= 0) & (rows < len(date_ids))
    for j, name in enumerate(target_names):
        out[rows[inside], j] = labels[name].cast(pl.Float64).to_numpy()[inside]
    return out


def released_labels(comp: Competition, limit: int) -> np.ndarray:
    """(dates, N) training labels known at `limit` (NaN where not yet released), for the prior."""
    date_ids = comp.labels["date_id"].to_numpy()
    labels = label_matrix(comp.labels, date_ids, comp.target_names).astype(np.float64)
    return np.where(released(date_ids, comp.target_lags, limit), labels, np.nan)


def scaled_source(panel: Panel, scaler: Scaler, data_cfg: DataConfig) -> WindowSource:
    """The scaler's features of `panel`, standardised, NaN -> 0, in a fresh padded tensor (no other full copy)."""
    columns = panel.column_indices(scaler.names)
    source = WindowSource(panel.date_ids, len(columns), data_cfg.window, data_cfg.time_scale)
    for start in range(0, len(panel.date_ids), ROW_CHUNK):
        block = panel.values[start : start + ROW_CHUNK][:, columns]
        source.write(start, scaler.transform(block, out=block))
    return source


def own_inputs(values: np.ndarray, scaler: Scaler) -> torch.Tensor:
    """(T, N, 2K) float32 model inputs from `own_features` values (T, N, K): scaled by `scaler` (one centre and
    scale per target and feature), NaN -> 0 (the centre), then the K missing flags (1 where the value was NaN)."""
    n_dates, n_targets, n_own = values.shape
    missing = np.isnan(values)  # (T, N, K)
    scaled = scaler.transform(values.reshape(n_dates, n_targets * n_own)).reshape(values.shape)  # (T, N, K)
    return torch.from_numpy(np.concatenate([np.nan_to_num(scaled, nan=0.0), missing.astype(np.float32)], axis=2))


def fit_own_scaler(values: np.ndarray, target_names: Sequence[str], scaling_cfg: ScalingConfig) -> Scaler:
    """Per target and own feature statistics of `own_features` values (rows, N, K) of the training rows only."""
    return Scaler.fit(values.reshape(len(values), -1), own_scaler_names(target_names), scaling_cfg)


@dataclass
class FoldData:
    """Everything one fold trains and validates on."""

    fold: Fold
    """The split these datasets follow."""
    train: WindowDataset
    """Training samples: dates of fold.train_dates with a label released by the fold's cutoff."""
    val: WindowDataset
    """Validation samples: dates of fold.val_dates with at least one label."""
    scaler: Scaler
    """Statistics fitted on the training rows (persist it for the predictor)."""
    screen: ScreenResult
    """Kept and dropped features with reasons."""
    feature_names: list[str]
    """Model input columns, in order (= scaler.names = screen.keep)."""
    own_scaler: Scaler | None = None
    """Statistics of the targets' own features on the training rows (`data.own_features`; persist it too)."""


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """(samples, N) float64 labels of a window dataset, in sample order (NaN where unknown)."""
    return dataset.targets[torch.as_tensor(dataset.rows)].double().numpy()


def lag_scale(labels: np.ndarray, target_lags: np.ndarray) -> np.ndarray:
    """(N,) per-target scale of a (S, N) label matrix (NaN where unknown): the std of every known label of the
    target's lag; 1 where that std is not a positive number."""
    scale = np.ones(len(target_lags))
    for lag in np.unique(target_lags):
        columns = target_lags == lag
        values = labels[:, columns]
        values = values[np.isfinite(values)]
        std = float(values.std()) if values.size > 1 else float("nan")
        scale[columns] = std if math.isfinite(std) and std > 0 else 1.0
    return scale


def target_scale(fold_data: FoldData, target_lags: np.ndarray) -> torch.Tensor:
    """(N,) per-target scale: the std of the target's lag's training labels (as released at the fold's cutoff)."""
    return torch.tensor(lag_scale(dataset_labels(fold_data.train), target_lags), dtype=torch.float32)




def competition_panel(comp: Competition, feature_cfg: FeatureConfig) -> Panel:
    """The feature panel of a whole competition (revealed labels from its train labels, release rule applied)."""
    return build_panel(comp.train, comp.labels, comp.pairs, feature_cfg)


def prepare_fold(
    comp: Competition,
    fold: Fold,
    feature_cfg: FeatureConfig,
    screen_cfg: ScreenConfig,
    scaling_cfg: ScalingConfig,
    data_cfg: DataConfig,
    panel: Panel | None = None,
) -> FoldData:
    """Screen, scale and window one fold. Pass `panel` (from `competition_panel`) to build it once for all folds.

    Screening and scaling see only the rows of fold.train_dates; training labels not released by the fold's
    cutoff are masked (NaN); validation windows read features up to their own date, which are causal.
    """
    cutoff = fold.train_cutoff
    if fold.train_dates[1] >= fold.val_dates[0]:
        raise ConfigError(f"{fold.name}: training dates {fold.train_dates} reach into validation {fold.val_dates}")
    if data_cfg.train_end is not None and cutoff > data_cfg.train_end:
        raise ConfigError(f"{fold.name}: training cutoff {cutoff} is after data.train_end = {data_cfg.train_end}")
    panel = competition_panel(comp, feature_cfg) if panel is None else panel
    if not np.array_equal(panel.date_ids, comp.train["date_id"].to_numpy()):
        raise DataError(f"{fold.name}: the panel's date_ids differ from the competition's train.csv")
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names)
    train_range = panel.rows_between(*fold.train_dates)
    if len(train_range) == 0:
        raise DataError(f"{fold.name}: no panel row in training dates {fold.train_dates}")
    # Training rows and validation rows are disjoint, so one label matrix serves both datasets.
    train_dates = panel.date_ids[train_range]
    labels[train_range] = np.where(released(train_dates, comp.target_lags, cutoff), labels[train_range], np.nan)
    screen = screen_features(panel, train_range, training_rows(labels, train_range), screen_cfg)
    if not screen.keep:
        raise ConfigError(f"{fold.name}: the screen keeps no feature of {len(panel.names)} (screen.min_std "
                          f"{screen_cfg.min_std:g}, screen.min_abs_ic {screen_cfg.min_abs_ic:g}): loosen them")
    scaler = Scaler.fit(training_rows(panel.values, train_range), screen.keep, scaling_cfg,
                        columns=panel.column_indices(screen.keep))
    source = scaled_source(panel, scaler, data_cfg)
    window, time_scale = data_cfg.window, data_cfg.time_scale
    has_label = np.isfinite(labels).any(axis=1)
    train = WindowDataset(source, panel.date_ids, labels, train_range[has_label[train_range]], window, time_scale)
    val_range = panel.rows_between(*fold.val_dates)
    val = WindowDataset(source, panel.date_ids, labels, val_range[has_label[val_range]], window, time_scale)
    own_scaler = None
    if data_cfg.own_features:
        values = own_features(comp.train, comp.labels, comp.pairs, feature_cfg.ffill_limit)  # (T, N, K)
        own_scaler = fit_own_scaler(values[train_range], comp.target_names, scaling_cfg)
        source.own = own_inputs(values, own_scaler)  # (T, N, 2K)
    return FoldData(fold=fold, train=train, val=val, scaler=scaler, screen=screen, feature_names=list(screen.keep),
                    own_scaler=own_scaler)


def window_for_latest(
    raw: pl.DataFrame,
    labels: pl.DataFrame | None,
    pairs: pl.DataFrame,
    feature_cfg: FeatureConfig,
    scaler: Scaler,
    keep: list[str],
    data_cfg: DataConfig,
    own_scaler: Scaler | None = None,
) -> dict[str, torch.Tensor]:
    """A one-sample batch (x (1, L, F), t (1, L), valid (1, L), date_id (1,), with data.own_features own
    (1, N, 2K)) for the last row of `raw`.

    `raw`: date_id + raw feature columns, consecutive dates (history + served rows); `labels`: date_id + targets
    holding the labels known so far (the revealed-label rule places each on its release date, later ones are
    ignored). Builds the panel on the last `tail_rows` rows and on the columns and targets that `keep` derives
    from only (`spread.features.panel_inputs`), which gives the same values as a full build; the targets' own
    features (scaled by `own_scaler`) need every target's legs and labels (`spread.members.model_inputs`).
    """
    if list(keep) != scaler.names:
        raise ArtifactError("window_for_latest: `keep` differs from the scaler's feature names")
    if data_cfg.own_features and own_scaler is None:
        raise ArtifactError("window_for_latest: data.own_features needs the own features' scaler")
    columns, targets = panel_inputs([c for c in raw.columns if c != "date_id"], pairs["target"].to_list(), keep)
    rows = tail_rows(feature_cfg, data_cfg)
    tail = raw[["date_id", *columns]].tail(rows)
    panel = build_panel(tail, labels, pairs.filter(pl.col("target").is_in(targets)), feature_cfg)
    source = scaled_source(panel, scaler, data_cfg)
    if data_cfg.own_features:  # the model reads the latest row's only, which needs own_lookback rows before it
        legs = raw[["date_id", *leg_columns(pairs)]].tail(own_lookback(feature_cfg.ffill_limit) + 1)
        own = own_inputs(own_features(legs, labels, pairs, feature_cfg.ffill_limit), own_scaler)[-1:]  # (1, N, 2K)
        source.own = own.expand(len(panel.date_ids), -1, -1)  # (T, N, 2K) view: every row reads the latest's
    latest = WindowDataset(source, panel.date_ids, None, [len(panel.date_ids) - 1], data_cfg.window,
                           data_cfg.time_scale)
    return default_collate([latest[0]])
