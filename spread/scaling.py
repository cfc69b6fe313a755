"""Per-fold standardisation fitted on the training slice only, persisted with the feature names.

Robust (default): centre = median, scale = IQR / 1.349 (the standard deviation of a normal with that IQR), falling
back to the standard deviation and then to 1 for columns whose IQR is zero (rare 0/1 flags, sparse features).
Otherwise mean / standard deviation. Standardised values are clipped to +-`clip` so a single outlier cannot
dominate a window. NaN stays NaN: the window layer turns it into 0 (the centre) and the missing flags say why.
The statistics are plain JSON, so the predictor loads them without the training data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from spread.errors import ArtifactError, ConfigError, check_range
from spread.features import column_chunks

T = TypeVar("T")


def read_json_artifact(path: str | Path, what: str, parse: Callable[[dict], T]) -> T:
    """`parse` of the JSON stored at `path`; a missing, unreadable or malformed file is an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found")
    try:
        return parse(json.loads(path.read_text()))
    except (json.JSONDecodeError, ArtifactError) as exc:
        raise ArtifactError(f"{path}: {exc}") from exc


IQR_TO_STD = 1.349
MIN_SCALE = 1e-12


@dataclass
class ScalingConfig:
    """How features are standardised per fold."""

    robust: bool = True
    """Median / IQR (robust) instead of mean / standard deviation."""
    clip: float = 5.0
    """Clip standardised values to [-clip, clip] (0 disables clipping)."""

    def __post_init__(self) -> None:
        check_range("scaling", "clip", self.clip, low=0)


def column_quantiles(block: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """(len(quantiles), k) quantiles of each column ignoring NaN, numpy's default "linear" method (as
    np.nanquantile, without its per-column Python loop); NaN for all-NaN columns."""
    ordered = np.sort(block, axis=0).astype(np.float64)  # NaN sort last
    observed = np.count_nonzero(~np.isnan(block), axis=0)
    out = np.empty((len(quantiles), block.shape[1]))
    for i, quantile in enumerate(quantiles):
        position = quantile * np.maximum(observed - 1, 0)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, np.maximum(observed - 1, 0))
        below = np.take_along_axis(ordered, low[None], axis=0)[0]
        above = np.take_along_axis(ordered, high[None], axis=0)[0]
        out[i] = below + (position - low) * (above - below)
    out[:, observed == 0] = np.nan
    return out


def column_statistics(block: np.ndarray, robust: bool) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of each column of a (rows, k) block, ignoring NaN; all-NaN columns get (0, 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, handled below
        std = np.nanstd(block, axis=0, dtype=np.float64)
        if robust:
            q25, centre, q75 = column_quantiles(block, [0.25, 0.5, 0.75])
            scale = (q75 - q25) / IQR_TO_STD
            scale = np.where(scale > MIN_SCALE, scale, std)
        else:
            centre, scale = np.nanmean(block, axis=0, dtype=np.float64), std
    centre = np.where(np.isfinite(centre), centre, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > MIN_SCALE), scale, 1.0)
    return centre, scale


@dataclass
class Scaler:
    """Per-feature centre and scale of one fold."""

    names: list[str]
    """Feature names, in the column order `transform` expects."""
    center: np.ndarray
    """(F,) float32 centres."""
    scale: np.ndarray
    """(F,) float32 positive scales."""
    clip: float
    """Clip bound applied after standardising (0: none)."""

    @classmethod
    def fit(
        cls, values: np.ndarray, names: list[str], cfg: ScalingConfig, columns: np.ndarray | None = None
    ) -> Scaler:
        """Statistics of `values` (training-slice rows only). `columns`: positions of `names` in `values` (default:
        the columns in order), read a chunk at a time instead of copying the selection."""
        columns = np.arange(values.shape[1]) if columns is None else np.asarray(columns)
        if len(columns) != len(names):
            raise ConfigError(f"scaler: {len(columns)} columns but {len(names)} names")
        center, scale = np.zeros(len(names)), np.ones(len(names))
        for part in column_chunks(len(names)):
            center[part], scale[part] = column_statistics(values[:, columns[part]], cfg.robust)
        return cls(list(names), center.astype(np.float32), scale.astype(np.float32), float(cfg.clip))

    def transform(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(T, F) -> float32 standardised and clipped; NaN kept. `out` may be `values` itself (in place)."""
        if values.shape[-1] != len(self.names):
            raise ConfigError(f"scaler: got {values.shape[-1]} columns, fitted on {len(self.names)}")
        if out is None:
            out = np.array(values, dtype=np.float32)
        elif out is not values:
            out[...] = values
        out -= self.center
        out /= self.scale
        if self.clip > 0:
            np.clip(out, -self.clip, self.clip, out=out)
        return out

    def to_dict(self) -> dict:
        return {"names": self.names, "center": self.center.tolist(), "scale": self.scale.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, data: dict) -> Scaler:
        try:
            names = [str(n) for n in data["names"]]
            center = np.asarray(data["center"], dtype=np.float32)
            scale = np.asarray(data["scale"], dtype=np.float32)
            clip = float(data["clip"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"scaler: malformed statistics ({exc!r})") from exc
        if not len(names) == len(center) == len(scale) or not np.all(scale > 0):
            raise ArtifactError(f"scaler: {len(names)} names, {len(center)} centres, {len(scale)} positive scales")
        return cls(names, center, scale, clip)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Scaler:
        return read_json_artifact(path, "scaler statistics", cls.from_dict)
