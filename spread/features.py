"""Causal model inputs from the raw panel: per-column transforms, missing flags and revealed labels.

Every feature of the row dated t is a function of raw rows t - lookback .. t and of labels already released by
date t, nothing else:

- prices (closes, settlement prices, FX rates, anything not recognised as open/high/low/volume): log returns
  ln P(t) - ln P(t - h) for each horizon h, on prices forward-filled from the past for at most `ffill_limit` rows;
- volumes and open interest: the one-day change of ln(1 + V);
- open/high/low/close groups (same prefix, suffixes _open/_high/_low/_close in any case): the intraday range
  ln(H / L) and body ln(C / O);
- a missing flag per price column (1 when the raw price of that row is absent);
- market volatility regime (`market_vol`): the mean over all price columns of ln(std of the last w one-day log
  returns / std of the last `market_vol_base`), a scale-free gauge of a market-wide calm or turbulent state. Its
  effect on returns is an interaction (it changes the sign or size of other inputs' effects), so its own IC is
  ~0 and the screen keeps it regardless (`ScreenConfig.always_keep`);
- gauge x return interactions (`vol_interaction`): every price column's log return times one market_vol gauge
  (`vol_interaction_form` "product"), or times the regime that gauge's sign reads, +1 calm / -1 turbulent ("sign"),
  so that a regime-dependent effect is linear in an input (Daniel & Moskowitz 2016, "Momentum crashes": momentum
  pays in calm markets and reverses in turbulent ones). The market and interaction features are the only ones
  read across columns: their stems `market` and `regime` need every price column;
- revealed labels: the lag-k label of date d appears on the row d + k + 1, the date the evaluation API hands it
  out (`spread.targets.release_date`). `revealed_label_features` is the only place that applies this rule to
  features, so training rows and inference rows see the same values.

Every feature is named `stem__transform`, the stem being the raw column, open/high/low/close prefix or target it is
computed from, and each is computed from its stem's columns alone (the stems `market` and `regime` stand for
every price column): so `panel_inputs` can tell which raw columns and
targets a given feature list needs, and a panel built on those only holds the same values for those features (the
predictor builds just what its model reads).

Because the lookback is bounded (`FeatureConfig.lookback`), building the panel on only the last L + lookback raw
rows reproduces the last L rows of a build on the full history exactly: the inference path relies on it.
Blocks read raw columns into numpy a chunk of columns at a time (temporaries stay small next to the panel; selected
by name, cast only where not Float64 already) and place the revealed labels with one scatter per lag: the
predictor rebuilds its tail panel on every call, so per-column overhead counts.
No statistic is computed over time here (no global mean, no backward fill): scaling and screening are fitted per
fold in `spread.scaling` and `spread.screening`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from spread.errors import ConfigError, DataError, check_range
from spread.targets import release_date

OHLC_SUFFIXES = ("open", "high", "low", "close")
INTERACTION_SUFFIXES = {"product": "xvol", "sign": "xsign"}
"""`FeatureConfig.vol_interaction_form` -> the suffix of its interaction features' names (`vol_interactions`)."""
COLUMN_CHUNK = 32
"""Columns processed at once by the transforms and the per-fold statistics: keeps temporaries small next to the
panel (the dataset layer's memory stays a few copies of the panel, see bench/bench_data.py)."""


@dataclass
class FeatureConfig:
    """Which transforms of the raw panel become model inputs."""

    return_horizons: list[int] = field(default_factory=lambda: [1, 5, 20])
    """Horizons h (rows) of the log returns ln P(t) - ln P(t - h) computed for every price column."""
    volume_change: bool = True
    """Add the one-day change of ln(1 + volume) for volume and open-interest columns."""
    ohlc_range: bool = True
    """Add ln(high / low) and ln(close / open) for every complete open/high/low/close group."""
    missing_flags: bool = True
    """Add a 0/1 flag per price column that is 1 on rows where the raw price is missing."""
    ffill_limit: int = 5
    """Forward-fill a missing raw value from at most this many rows back (0: no filling); never backward."""
    revealed_labels: bool = True
    """Add, per target, the latest label released by the row's date (lag-k label of date t - k - 1)."""
    market_vol: list[int] = field(default_factory=list)
    """Windows w (rows) of the market volatility features `market__vol{w}`: on row t the mean over price columns of
    ln(std of the one-day log returns of rows t-w+1..t / their std over the last `market_vol_base` rows); [] adds
    none. A calm or turbulent market moves every column's ratio the same way, so the mean reads the regime."""
    market_vol_base: int = 250
    """Rows of the long volatility each market_vol window is measured against."""
    vol_interaction: int = 0
    """Window w of the `market__vol{w}` gauge that multiplies (`vol_interaction_form`) every price column's log
    returns into the `regime__` features (0: none; w must be one of `market_vol`). An effect whose sign or size the
    market's calm or turbulent state sets (a lead-lag that reverses in turbulence) becomes a linear input: the
    screen can rank it by its IC and the model need not learn the product."""
    vol_interaction_form: str = "product"
    """What multiplies the returns in the `vol_interaction` features: "product", the gauge itself (features
    `regime__{column}_ret{h}_xvol{w}`: an effect that grows with the gauge); "sign", the regime its sign reads,
    +1 where the short volatility is below the long one (calm), -1 above (turbulent), 0 where equal (features
    `regime__{column}_ret{h}_xsign{w}`: an effect that flips sign between regimes, as momentum's does)."""

    def __post_init__(self) -> None:
        if any(not isinstance(h, int) or h < 1 for h in self.return_horizons):
            raise ConfigError(f"features.return_horizons: expected positive integers, got {self.return_horizons}")
        if any(not isinstance(w, int) or w < 2 for w in self.market_vol):
            raise ConfigError(f"features.market_vol: expected integers >= 2, got {self.market_vol}")
        for name in ("return_horizons", "market_vol"):
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ConfigError(f"features.{name}: repeated values in {getattr(self, name)}")
        check_range("features", "ffill_limit", self.ffill_limit, low=0)
        check_range("features", "market_vol_base", self.market_vol_base, low=2)
        if not isinstance(self.vol_interaction, int) or self.vol_interaction < 0:
            raise ConfigError(f"features.vol_interaction: expected an integer >= 0, got {self.vol_interaction!r}")
        if self.vol_interaction and self.vol_interaction not in self.market_vol:
            raise ConfigError(f"features.vol_interaction: {self.vol_interaction} is not one of features.market_vol "
                              f"{self.market_vol} (0 for none)")
        if self.vol_interaction_form not in INTERACTION_SUFFIXES:
            raise ConfigError(f"features.vol_interaction_form: expected one of {sorted(INTERACTION_SUFFIXES)}, got "
                              f"{self.vol_interaction_form!r}")

    def lookback(self) -> int:
        """How many raw rows before t any feature of row t may read (revealed labels read no raw row)."""
        market = [*self.market_vol, self.market_vol_base] if self.market_vol else []
        longest_difference = max([*self.return_horizons, 1 if self.volume_change else 0, *market])
        return longest_difference + self.ffill_limit


@dataclass
class Panel:
    """Features on consecutive dates: one row per date_id, one column per feature."""

    date_ids: np.ndarray
    """(T,) int64, consecutive."""
    values: np.ndarray
    """(T, F) float32; NaN where a feature is unknown (missing beyond the fill limit, too little history)."""
    names: list[str]
    """F feature names, in column order."""

    def column_indices(self, names: Sequence[str]) -> np.ndarray:
        """Column positions of `names`; DataError naming the absent ones."""
        index = {name: i for i, name in enumerate(self.names)}
        missing = [name for name in names if name not in index]
        if missing:
            raise DataError(f"feature panel: {len(missing)} feature(s) not built from this data: {missing[:10]}")
        return np.array([index[name] for name in names], dtype=np.int64)

    def rows_between(self, first: int, last: int) -> np.ndarray:
        """Row indices of the dates first..last (inclusive) that the panel holds."""
        return np.flatnonzero((self.date_ids >= first) & (self.date_ids <= last))


def consecutive_date_ids(frame: pl.DataFrame, where: str) -> np.ndarray:
    """The frame's date_id column as int64, checked to be consecutive increasing integers."""
    if "date_id" not in frame.columns:
        raise DataError(f"{where}: missing column 'date_id'")
    date_ids = frame["date_id"].cast(pl.Int64).to_numpy()
    steps = np.diff(date_ids)
    if np.any(steps != 1):
        row = int(np.argmax(steps != 1)) + 1
        raise DataError(
            f"{where}: date_id {date_ids[row]} follows {date_ids[row - 1]} on row {row}: "
            "feature rows must be consecutive date_ids"
        )
    return date_ids


def column_kind(name: str) -> str:
    """'volume', 'open', 'high', 'low' or 'price' (everything else), from the column name alone."""
    lower = name.lower()
    if lower.endswith("volume") or lower.endswith("open_interest"):
        return "volume"
    for suffix in OHLC_SUFFIXES[:3]:
        if lower.endswith("_" + suffix):
            return suffix
    return "price"


def ohlc_groups(columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """prefix -> {open, high, low, close -> column} for every prefix that has all four suffixes."""
    groups: dict[str, dict[str, str]] = {}
    for name in columns:
        prefix, _, suffix = name.rpartition("_")
        if prefix and suffix.lower() in OHLC_SUFFIXES:
            groups.setdefault(prefix, {})[suffix.lower()] = name
    return {prefix: parts for prefix, parts in groups.items() if len(parts) == len(OHLC_SUFFIXES)}


def column_chunks(n_columns: int) -> list[slice]:
    """Consecutive slices of at most COLUMN_CHUNK columns covering 0..n_columns."""
    return [slice(start, min(start + COLUMN_CHUNK, n_columns)) for start in range(0, n_columns, COLUMN_CHUNK)]


def forward_fill(values: np.ndarray, limit: int) -> np.ndarray:
    """Fill NaN in each column with the last finite value at most `limit` rows above; older gaps stay NaN."""
    rows = np.arange(len(values))[:, None]
    last_seen = np.where(np.isnan(values), -1, rows)
    np.maximum.accumulate(last_seen, axis=0, out=last_seen)
    filled = np.take_along_axis(values, np.maximum(last_seen, 0), axis=0)
    filled[(last_seen < 0) | (rows - last_seen > limit)] = np.nan
    return filled


def float_matrix(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """(rows, C) writable float64 of `columns` (null -> NaN, other values as they are).

    Selected by name (`frame[columns]`, no expression per column) and cast in one expression only when some column
    is not Float64 already (an all-empty column read as String, integers): a few ms less per predictor call.
    """
    if not columns:
        return np.empty((frame.height, 0))
    selected = frame[list(columns)]
    if not all(isinstance(dtype, pl.Float64) for dtype in selected.dtypes):
        selected = selected.select(pl.all().cast(pl.Float64))
    return selected.to_numpy(writable=True)


def raw_matrix(raw: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """(T, C) float64 of `columns`; null, NaN and +-inf all become NaN."""
    values = float_matrix(raw, columns)
    values[~np.isfinite(values)] = np.nan
    return values


def log_levels(values: np.ndarray, limit: int, *, plus_one: bool = False) -> np.ndarray:
    """Forward-filled ln(x) (or ln(1 + x)) of each column of `values` (overwritten: pass a fresh `raw_matrix`);
    non-positive values count as missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        (np.log1p if plus_one else np.log)(values, out=values)
    values[~np.isfinite(values)] = np.nan
    return forward_fill(values, limit)


def write_differences(levels: np.ndarray, horizon: int, out: np.ndarray) -> None:
    """out[t] = levels[t] - levels[t - horizon]; NaN on the first `horizon` rows."""
    out[:horizon] = np.nan
    np.subtract(levels[horizon:], levels[:-horizon], out=out[horizon:], casting="same_kind")


def released(label_dates: np.ndarray, lags: np.ndarray, by_date: int | np.ndarray) -> np.ndarray:
    """(len(label_dates), len(lags)) bool: is the lag-k label of each date known on `by_date`?"""
    return release_date(label_dates[:, None], lags[None, :]) <= np.asarray(by_date)[..., None]


def revealed_label_features(
    labels: pl.DataFrame, date_ids: np.ndarray, target_lags: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """(T, N) float32: on the row of date t, target j (lag k) holds the label of date d with release_date(d, k) = t.

    `labels` is date_id + the N target columns (in `target_lags` order) holding each label where it is known; dates
    it lacks give NaN. A label can only land on the row of its own release date, so the value on row t was known
    on date t by construction: this function is the one place where the release rule shapes model inputs.
    """
    names = [c for c in labels.columns if c != "date_id"]
    if len(names) != len(target_lags):
        raise DataError(f"labels: {len(names)} target columns but {len(target_lags)} target lags")
    if out is None:
        out = np.empty((len(date_ids), len(names)), dtype=np.float32)
    out[:] = np.nan
    label_dates = labels["date_id"].cast(pl.Int64).to_numpy()
    target_lags = np.asarray(target_lags, dtype=np.int64)
    for lag in np.unique(target_lags):  # all targets of one lag shift their label dates by the same release delay
        columns = np.flatnonzero(target_lags == lag)
        rows = release_date(label_dates, int(lag)) - date_ids[0]
        inside = (rows >= 0) & (rows < len(date_ids))
        out[np.ix_(rows[inside], columns)] = float_matrix(labels, [names[j] for j in columns])[inside]
    return out


@dataclass
class FeatureBlock:
    """A group of panel columns computed together: names, and a function writing them into a (T, k) view."""

    names: list[str]
    write: Callable[[np.ndarray], None]


def price_blocks(raw: pl.DataFrame, prices: list[str], cfg: FeatureConfig) -> list[FeatureBlock]:
    """Log returns per horizon and missing flags of the price columns."""
    blocks = []
    if prices and cfg.return_horizons:

        def write_returns(out: np.ndarray) -> None:
            for part in column_chunks(len(prices)):
                levels = log_levels(raw_matrix(raw, prices[part]), cfg.ffill_limit)
                for i, horizon in enumerate(cfg.return_horizons):
                    offset = i * len(prices)
                    write_differences(levels, horizon, out[:, offset + part.start : offset + part.stop])

        names = [f"{c}__ret{h}" for h in cfg.return_horizons for c in prices]
        blocks.append(FeatureBlock(names, write_returns))
    if prices and cfg.missing_flags:

        def write_flags(out: np.ndarray) -> None:
            for part in column_chunks(len(prices)):
                out[:, part] = np.isnan(raw_matrix(raw, prices[part]))

        blocks.append(FeatureBlock([f"{c}__missing" for c in prices], write_flags))
    return blocks


MARKET_STEM = "market"
"""Stem of the market volatility features: they read every price column."""
REGIME_STEM = "regime"
"""Stem of the gauge x return interactions (`FeatureConfig.vol_interaction`): they read every price column too."""
CROSS_STEMS = (MARKET_STEM, REGIME_STEM)
"""Stems that stand for every price column rather than one raw column (`reads_every_price`, `panel_inputs`)."""


def window_sums(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum, sum of squares) of the finite values of rows max(0, t-window+1)..t of each column, each (T, C).

    Each window is summed from its own rows (no running sums: rounding from earlier rows would leak in, and a tail
    build must reproduce a full build exactly); the first rows sum the partial windows they have."""
    finite = np.isfinite(values)
    zeroed = np.where(finite, values, 0.0)
    pad = np.zeros((window - 1, *values.shape[1:]))
    return tuple(sliding_window_view(np.concatenate([pad, x]), window, axis=0).sum(axis=-1)
                 for x in (finite.astype(np.float64), zeroed, zeroed * zeroed))  # 3 x (T, C)


def rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    """(T, C) sample std of the finite values of rows t-window+1..t of each column (`window_sums`); NaN on the
    first window - 1 rows and where fewer than max(2, ceil(window / 2)) values are finite; 0 where the window's
    values are equal."""
    count, total, square = window_sums(values, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = square - total**2 / count
        centred[centred <= 1e-12 * square] = 0.0  # equal values: cancellation would leave a tiny spurious std
        variance = centred / (count - 1)
    out = np.where(count >= max(2, -(-window // 2)), np.sqrt(np.maximum(variance, 0.0)), np.nan)
    out[: window - 1] = np.nan
    return out


def market_block(raw: pl.DataFrame, prices: list[str], cfg: FeatureConfig) -> list[FeatureBlock]:
    """The market volatility regime features (`FeatureConfig.market_vol`), one column per window. A column's
    forward-filled prices over its holidays count as zero returns (as in its `__ret1`); a column with no finite
    ratio on a row (missing, or flat over the window) is left out of that row's mean."""
    if not prices or not cfg.market_vol:
        return []
    windows = cfg.market_vol

    def write(out: np.ndarray) -> None:
        total, count = np.zeros((len(out), len(windows))), np.zeros((len(out), len(windows)))
        for part in column_chunks(len(prices)):
            levels = log_levels(raw_matrix(raw, prices[part]), cfg.ffill_limit)
            returns = np.empty_like(levels)
            write_differences(levels, 1, returns)
            base = rolling_std(returns, cfg.market_vol_base)
            for k, window in enumerate(windows):
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = np.log(rolling_std(returns, window) / base)
                finite = np.isfinite(ratio)
                total[:, k] += np.where(finite, ratio, 0.0).sum(axis=1)
                count[:, k] += finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:] = np.where(count > 0, total / count, np.nan)

    return [FeatureBlock([f"{MARKET_STEM}__vol{w}" for w in windows], write)]


def volume_block(raw: pl.DataFrame, volumes: list[str], cfg: FeatureConfig) -> list[FeatureBlock]:
    """One-day change of ln(1 + volume)."""
    if not volumes or not cfg.volume_change:
        return []

    def write(out: np.ndarray) -> None:
        for part in column_chunks(len(volumes)):
            levels = log_levels(raw_matrix(raw, volumes[part]), cfg.ffill_limit, plus_one=True)
            write_differences(levels, 1, out[:, part])

    return [FeatureBlock([f"{c}__dlogvol" for c in volumes], write)]


def ohlc_block(raw: pl.DataFrame, groups: dict[str, dict[str, str]], cfg: FeatureConfig) -> list[FeatureBlock]:
    """ln(high / low) and ln(close / open) of every complete OHLC group."""
    if not groups or not cfg.ohlc_range:
        return []
    prefixes = list(groups)

    def write(out: np.ndarray) -> None:
        ranges, bodies = out[:, : len(prefixes)], out[:, len(prefixes) :]
        for first, second, differences in (("high", "low", ranges), ("close", "open", bodies)):
            for part in column_chunks(len(prefixes)):
                minuend = log_levels(raw_matrix(raw, [groups[p][first] for p in prefixes[part]]), cfg.ffill_limit)
                subtrahend = log_levels(raw_matrix(raw, [groups[p][second] for p in prefixes[part]]), cfg.ffill_limit)
                np.subtract(minuend, subtrahend, out=differences[:, part], casting="same_kind")

    names = [f"{p}__range" for p in prefixes] + [f"{p}__body" for p in prefixes]
    return [FeatureBlock(names, write)]


def revealed_block(
    labels: pl.DataFrame | None, date_ids: np.ndarray, pairs: pl.DataFrame, cfg: FeatureConfig
) -> list[FeatureBlock]:
    """The latest released label of every target."""
    if labels is None or not cfg.revealed_labels:
        return []
    targets = pairs["target"].to_list()
    present = set(labels.columns)
    missing = [t for t in targets if t not in present]
    if missing:
        raise DataError(f"labels: missing target column(s) {missing[:10]}")
    lags = pairs["lag"].to_numpy().astype(np.int64)
    ordered = labels[["date_id", *targets]]

    def write(out: np.ndarray) -> None:
        revealed_label_features(ordered, date_ids, lags, out=out)

    return [FeatureBlock([f"{t}__revealed" for t in targets], write)]


def feature_stem(name: str) -> str:
    """The raw column, open/high/low/close prefix or target that the panel feature `name` is computed from."""
    return name.rpartition("__")[0]


def reads_every_price(name: str) -> bool:
    """Whether the panel feature `name` is a market or interaction feature (`CROSS_STEMS`): it reads every price
    column, whatever the raw column named inside it (which may itself hold "__")."""
    return name.partition("__")[0] in CROSS_STEMS


def panel_inputs(
    raw_columns: Sequence[str], targets: Sequence[str], features: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(raw columns, targets), each in the given order, that `build_panel` needs to build every one of `features`.

    A panel built on just these holds each of `features` with the values of a build on everything (and possibly
    other features of the same stems).
    """
    stems = {feature_stem(name) for name in features}
    needed = set(stems)
    if any(reads_every_price(name) for name in features):
        needed.update(c for c in raw_columns if column_kind(c) == "price")
    for prefix, parts in ohlc_groups(raw_columns).items():
        if prefix in stems:
            needed.update(parts.values())
    return [c for c in raw_columns if c in needed], [t for t in targets if t in stems]


def build_panel(raw: pl.DataFrame, labels: pl.DataFrame | None, pairs: pl.DataFrame, cfg: FeatureConfig) -> Panel:
    """The (T, F) feature panel of `raw` (date_id + raw feature columns, consecutive date_ids).

    `labels` holds, per date_id, the labels known so far (None: no revealed-label features); `pairs` gives the
    targets' names and lags (columns target, lag, pair).
    """
    date_ids = consecutive_date_ids(raw, "raw panel")
    columns = [c for c in raw.columns if c != "date_id"]
    for stem, field_name, used in ((MARKET_STEM, "market_vol", cfg.market_vol),
                                   (REGIME_STEM, "vol_interaction", cfg.vol_interaction)):
        if used and stem in columns:
            raise DataError(f"raw panel: a column named {stem!r} would be read as the stem of the features of "
                            f"features.{field_name}; rename it")
    kinds = {c: column_kind(c) for c in columns}
    prices = [c for c in columns if kinds[c] == "price"]
    blocks = [
        *price_blocks(raw, prices, cfg),
        *market_block(raw, prices, cfg),
        *volume_block(raw, [c for c in columns if kinds[c] == "volume"], cfg),
        *ohlc_block(raw, ohlc_groups(columns), cfg),
        *revealed_block(labels, date_ids, pairs, cfg),
    ]
    names = [name for block in blocks for name in block.names]
    interactions = vol_interactions(prices, cfg)
    values = np.empty((len(date_ids), len(names) + len(interactions)), dtype=np.float32)
    start = 0
    for block in blocks:
        block.write(values[:, start : start + len(block.names)])
        start += len(block.names)
    if interactions:
        index = {name: i for i, name in enumerate(names)}
        gauge = values[:, index[f"{MARKET_STEM}__vol{cfg.vol_interaction}"]]  # (T,)
        if cfg.vol_interaction_form == "sign":
            gauge = -np.sign(gauge)  # (T,) +1 calm, -1 turbulent, NaN where the gauge is
        returns = [index[source] for source in interactions.values()]
        np.multiply(values[:, returns], gauge[:, None], out=values[:, start:])  # (T, prices x horizons)
    return Panel(date_ids=date_ids, values=values, names=names + list(interactions))


def vol_interactions(prices: list[str], cfg: FeatureConfig) -> dict[str, str]:
    """`FeatureConfig.vol_interaction`'s features: name -> the return feature the gauge multiplies, in panel order
    of the returns ({} when off or without a price column; with one, `market_block` built the gauge, whose window
    the config checks is one of `market_vol`)."""
    if not cfg.vol_interaction:
        return {}
    w, suffix = cfg.vol_interaction, INTERACTION_SUFFIXES[cfg.vol_interaction_form]
    return {f"{REGIME_STEM}__{c}_ret{h}_{suffix}{w}": f"{c}__ret{h}" for h in cfg.return_horizons for c in prices}
