"""Feature transforms, revealed labels, screening and scaling on tiny hand-made frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from spread.errors import ArtifactError, ConfigError, DataError
from spread.features import (
    FeatureConfig,
    Panel,
    build_panel,
    column_kind,
    forward_fill,
    ohlc_groups,
    panel_inputs,
    released,
    revealed_label_features,
    rolling_std,
)
from spread.scaling import Scaler, ScalingConfig, column_quantiles
from spread.screening import ScreenConfig, ScreenResult, average_ranks, screen_features

NAN = np.nan
PAIRS = pl.DataFrame({"target": ["target_0", "target_1"], "lag": [1, 3], "pair": ["X_Close", "X_Close - FX_AB"]})


def raw_frame(n_dates: int = 40, seed: int = 0, start: int = 0) -> pl.DataFrame:
    """One OHLCV instrument, one FX rate and an open-interest column, with a few holes."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_dates)))
    frame = {
        "date_id": np.arange(start, start + n_dates),
        "X_Open": close * np.exp(rng.normal(0, 0.003, n_dates)),
        "X_High": close * 1.01,
        "X_Low": close * 0.99,
        "X_Close": close,
        "X_Volume": rng.integers(0, 1000, n_dates).astype(float),
        "X_open_interest": rng.integers(1, 50, n_dates).astype(float),
        "FX_AB": 1.2 * np.exp(np.cumsum(rng.normal(0, 0.004, n_dates))),
    }
    for name in ("X_Open", "X_High", "X_Low", "X_Close", "X_Volume"):
        frame[name][[3, 17, 18, 19]] = NAN  # an exchange holiday and a 3-day closure
    return pl.DataFrame(frame)


def label_frame(date_ids: np.ndarray) -> pl.DataFrame:
    """Labels whose value encodes (date, target): 1000 * date + target index."""
    return pl.DataFrame({"date_id": date_ids, "target_0": date_ids * 1000.0, "target_1": date_ids * 1000.0 + 1})


def test_column_kinds_and_ohlc_groups():
    kinds = {name: column_kind(name) for name in raw_frame().columns[1:]}
    assert kinds == {"X_Open": "open", "X_High": "high", "X_Low": "low", "X_Close": "price", "X_Volume": "volume",
                     "X_open_interest": "volume", "FX_AB": "price"}
    assert column_kind("US_Stock_GLD_adj_close") == "price" and column_kind("US_Stock_GLD_adj_volume") == "volume"
    assert ohlc_groups(["A_adj_open", "A_adj_high", "A_adj_low", "A_adj_close", "B_Open", "B_Close"]) == {
        "A_adj": {"open": "A_adj_open", "high": "A_adj_high", "low": "A_adj_low", "close": "A_adj_close"}}


def test_forward_fill_is_limited_and_never_backward():
    values = np.array([[NAN], [1.0], [NAN], [NAN], [NAN], [2.0], [NAN]])
    filled = forward_fill(values, limit=2)[:, 0]
    np.testing.assert_array_equal(filled, [NAN, 1.0, 1.0, 1.0, NAN, 2.0, 2.0])
    np.testing.assert_array_equal(forward_fill(values, limit=0), values)


def test_returns_volume_range_and_flags_match_hand_computation():
    raw = raw_frame()
    cfg = FeatureConfig(return_horizons=[1, 4], ffill_limit=1, revealed_labels=False)
    panel = build_panel(raw, None, PAIRS, cfg)
    col = {name: panel.values[:, i] for i, name in enumerate(panel.names)}
    close = raw["X_Close"].to_numpy()
    filled = forward_fill(np.log(close)[:, None], 1)[:, 0]
    np.testing.assert_allclose(col["X_Close__ret1"][1:], (filled[1:] - filled[:-1]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(col["X_Close__ret4"][4:], (filled[4:] - filled[:-4]), rtol=1e-5, atol=1e-7)
    assert np.isnan(col["X_Close__ret4"][:4]).all()
    assert col["X_Close__ret1"][3] == 0.0  # one holiday: filled from the day before
    assert np.isnan(col["X_Close__ret1"][18:20]).all()  # beyond the fill limit
    np.testing.assert_array_equal(col["X_Close__missing"], np.isnan(close).astype(np.float32))
    assert not col["FX_AB__missing"].any()
    volume = forward_fill(np.log1p(raw["X_Volume"].to_numpy())[:, None], 1)[:, 0]
    np.testing.assert_allclose(col["X_Volume__dlogvol"][1:], volume[1:] - volume[:-1], rtol=1e-5, atol=1e-6)
    assert "X_open_interest__dlogvol" in col
    assert col["X__range"][0] == pytest.approx(np.log(1.01 / 0.99), rel=1e-5)
    np.testing.assert_allclose(col["X__body"][:3], np.log(close[:3] / raw["X_Open"].to_numpy()[:3]), rtol=1e-4)
    assert panel.values.dtype == np.float32 and panel.values.shape == (40, len(panel.names))


def test_config_switches_remove_their_features():
    cfg = FeatureConfig(return_horizons=[], volume_change=False, ohlc_range=False, missing_flags=False)
    panel = build_panel(raw_frame(), label_frame(np.arange(40)), PAIRS, cfg)
    assert panel.names == ["target_0__revealed", "target_1__revealed"]
    assert cfg.lookback() == cfg.ffill_limit
    assert FeatureConfig(return_horizons=[1, 5, 20], ffill_limit=5).lookback() == 25


@pytest.mark.parametrize("bad", [{"return_horizons": [0]}, {"ffill_limit": -1}, {"market_vol": [1]},
                                 {"market_vol_base": 1}, {"market_vol": [5, 5]}, {"return_horizons": [1, 1]}])
def test_feature_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        FeatureConfig(**bad)


def test_revealed_labels_land_on_their_release_date():
    dates = np.arange(10, 30)
    labels = label_frame(dates)
    features = revealed_label_features(labels.select("date_id", "target_0", "target_1"), dates, np.array([1, 3]))
    for row, date in enumerate(dates):
        for j, lag in enumerate((1, 3)):
            source_date = date - lag - 1
            expected = source_date * 1000.0 + j if source_date >= dates[0] else NAN
            np.testing.assert_equal(features[row, j], expected)
    # every value shown on row t is a label released by t
    for j, lag in enumerate((1, 3)):
        shown = ~np.isnan(features[:, j])
        label_dates = (features[shown, j] // 1000).astype(np.int64)
        assert shown.sum() == len(dates) - lag - 1
        assert np.all(released(label_dates, np.array([lag]), dates[shown])[:, 0])


def test_revealed_labels_match_a_per_target_reference():
    """Targets of mixed lags in any order, label dates unordered, partly outside the rows, one integer column."""
    rng = np.random.default_rng(4)
    lags = np.array([3, 1, 4, 1, 2, 4])
    dates = np.arange(50, 80)
    label_dates = rng.permutation(np.arange(40, 85))[:35]
    values = rng.normal(size=(len(label_dates), len(lags)))
    values[rng.random(values.shape) < 0.2] = NAN
    labels = pl.DataFrame({"date_id": label_dates, **{f"t{j}": values[:, j] for j in range(len(lags))}})
    labels = labels.with_columns(pl.Series("t2", np.arange(len(label_dates)) * 3, dtype=pl.Int64))
    expected = np.full((len(dates), len(lags)), NAN, dtype=np.float32)
    for j, lag in enumerate(lags):
        rows = label_dates + lag + 1 - dates[0]
        inside = (rows >= 0) & (rows < len(dates))
        expected[rows[inside], j] = labels[f"t{j}"].cast(pl.Float64).to_numpy()[inside]
    np.testing.assert_array_equal(revealed_label_features(labels, dates, lags), expected)


def test_raw_columns_of_any_dtype_give_the_float64_panel():
    """Integer, Float32 and all-empty String columns (a polars read of an empty column) read as their float64 values;
    +-inf counts as missing."""
    raw = raw_frame().with_columns(pl.col("FX_AB").cast(pl.Float32), pl.col("X_open_interest").cast(pl.Int64),
                                   pl.lit(None, dtype=pl.String).alias("Y_Close"))
    raw = raw.with_columns(pl.when(pl.col("date_id") == 5).then(float("inf")).otherwise(pl.col("X_Close"))
                           .alias("X_Close"))
    as_float = raw.with_columns(pl.exclude("date_id").cast(pl.Float64))
    panel = build_panel(raw, label_frame(np.arange(40)), PAIRS, FeatureConfig())
    np.testing.assert_array_equal(panel.values, build_panel(as_float, label_frame(np.arange(40)), PAIRS,
                                                            FeatureConfig()).values)
    column = {name: panel.values[:, i] for i, name in enumerate(panel.names)}
    assert column["X_Close__missing"][5] == 1.0 and column["Y_Close__missing"].all()
    assert np.isnan(column["Y_Close__ret1"]).all() and np.isfinite(column["X_open_interest__dlogvol"][1:]).all()


def test_build_panel_checks_its_inputs():
    raw = raw_frame()
    with pytest.raises(DataError, match="consecutive"):
        build_panel(raw.filter(pl.col("date_id") != 7), None, PAIRS, FeatureConfig())
    with pytest.raises(DataError, match="target_1"):
        build_panel(raw, label_frame(np.arange(40)).drop("target_1"), PAIRS, FeatureConfig())
    panel = build_panel(raw, None, PAIRS, FeatureConfig())
    with pytest.raises(DataError, match="nope"):
        panel.column_indices(["nope"])


def test_rolling_std_matches_a_windowed_nanstd():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(50, 3))
    values[rng.random(values.shape) < 0.3] = NAN
    values[10:30, 2] = NAN  # a long gap: too few finite values in the windows over it
    for window in (8, 5):
        out = rolling_std(values, window)
        assert np.isnan(out[: window - 1]).all()
        for t in range(window - 1, 50):
            for c in range(3):
                part = values[t - window + 1 : t + 1, c]
                finite = part[np.isfinite(part)]
                expected = np.std(finite, ddof=1) if len(finite) >= max(2, -(-window // 2)) else NAN
                np.testing.assert_allclose(out[t, c], expected, equal_nan=True)
    assert np.isnan(rolling_std(values, 8)[25, 2]) and np.isnan(rolling_std(values[:4], 5)).all()
    flat = np.full((12, 1), 0.01)  # equal values: exactly 0, not a cancellation residue (whose log would be huge)
    assert (rolling_std(flat, 6)[5:] == 0).all()


def test_market_vol_reads_a_market_wide_volatility_regime():
    """Every price column turns 3x more volatile on dates 200..259: market__vol10 rises there, then falls back."""
    rng = np.random.default_rng(6)
    scale = np.where((np.arange(400) >= 200) & (np.arange(400) < 260), 0.03, 0.01)
    frame = {"date_id": np.arange(400)}
    prices = [f"S{k}_Close" for k in range(10)] + ["FX_AB", "FX_CD"]
    for name in prices:
        frame[name] = 100 * np.exp(np.cumsum(rng.normal(size=400) * scale))
    frame["A_Volume"] = rng.integers(1, 100, 400).astype(float)  # not a price: not read
    cfg = FeatureConfig(return_horizons=[1], market_vol=[10], market_vol_base=100)
    panel = build_panel(pl.DataFrame(frame), None, PAIRS, cfg)
    gauge = panel.values[:, panel.column_indices(["market__vol10"])[0]]
    assert np.isnan(gauge[:99]).all() and np.isfinite(gauge[99:]).all()
    calm, turbulent, after = gauge[150:200].mean(), gauge[210:250].mean(), gauge[270:290].mean()
    assert abs(calm) < 0.15 and turbulent > 0.35 and after < -0.5  # ln 3 = 1.1; the base window catches up
    assert cfg.lookback() == 100 + cfg.ffill_limit
    assert panel_inputs(list(frame)[1:], [], ["market__vol10"]) == (prices, [])


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(return_horizons=[2, 7], ffill_limit=0),
                                 FeatureConfig(market_vol=[3, 6], market_vol_base=12),
                                 FeatureConfig(market_vol=[3, 6], market_vol_base=12, vol_interaction=3),
                                 FeatureConfig(market_vol=[3, 6], market_vol_base=12, vol_interaction=3,
                                               vol_interaction_form="sign")])
def test_building_on_the_last_rows_reproduces_the_full_build(cfg):
    """The inference path builds the panel on the last L + lookback raw rows only."""
    raw, window = raw_frame(n_dates=80, seed=3), 30
    labels = label_frame(np.arange(80))
    full = build_panel(raw, labels, PAIRS, cfg)
    tail = build_panel(raw.tail(window + cfg.lookback()), labels, PAIRS, cfg)
    np.testing.assert_array_equal(tail.values[-window:], full.values[-window:])
    assert tail.names == full.names


def test_market_features_of_a_tail_build_equal_the_full_build_after_a_bad_print():
    """The rolling volatilities sum each window from its own rows: a huge move long before the tail (a bad print)
    leaves no rounding residue in the tail's values."""
    rng = np.random.default_rng(1)
    frame = {"date_id": np.arange(1500)}
    for k in range(3):
        price = 7.8 * np.exp(np.cumsum(rng.normal(size=1500) * 1e-5))
        price[200] *= 1000
        frame[f"S{k}_Close"] = price
    raw, window = pl.DataFrame(frame), 64
    cfg = FeatureConfig(return_horizons=[1], market_vol=[5, 20], market_vol_base=250, ffill_limit=0)
    full = build_panel(raw, None, PAIRS, cfg)
    tail = build_panel(raw.tail(window + cfg.lookback()), None, PAIRS, cfg)
    np.testing.assert_array_equal(tail.values[-window:], full.values[-window:])
    with pytest.raises(DataError, match="'market'"):
        build_panel(raw.with_columns(pl.col("S0_Close").alias("market")), None, PAIRS, cfg)


@pytest.mark.parametrize("form", ["product", "sign"])
def test_vol_interaction_multiplies_every_price_return_by_the_gauge(form):
    """regime__{column}_ret{h}_xvol{w} = {column}__ret{h} x market__vol{w} ("product"), _xsign{w} the same times
    -sign(market__vol{w}) ("sign": +1 calm, -1 turbulent), for every price column and horizon, NaN where either is;
    it needs every price column, and a raw column named 'regime' is refused."""
    raw = raw_frame(n_dates=80, seed=2)
    cfg = FeatureConfig(return_horizons=[1, 4], market_vol=[3, 6], market_vol_base=12, vol_interaction=6,
                        vol_interaction_form=form)
    suffix = {"product": "xvol", "sign": "xsign"}[form]
    panel = build_panel(raw, None, PAIRS, cfg)
    plain = build_panel(raw, None, PAIRS, FeatureConfig(return_horizons=[1, 4], market_vol=[3, 6], market_vol_base=12))
    interactions = [name for name in panel.names if name.startswith("regime__")]
    returns = [name for name in plain.names if "__ret" in name]
    assert panel.names == plain.names + interactions and len(interactions) == len(returns) > 0
    gauge = plain.values[:, plain.column_indices(["market__vol6"])[0]]
    for name in returns:
        column, horizon = name.split("__ret")
        got = panel.values[:, panel.column_indices([f"regime__{column}_ret{horizon}_{suffix}6"])[0]]
        want = plain.values[:, plain.column_indices([name])[0]] * (gauge if form == "product" else -np.sign(gauge))
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got[:11]).all() and np.isfinite(got[12:]).any()  # the gauge needs market_vol_base rows
    prices = [c for c in raw.columns[1:] if column_kind(c) == "price"]
    assert panel_inputs(raw.columns[1:], [], interactions[:1]) == (prices, [])
    with pytest.raises(DataError, match="'regime'.*features.vol_interaction"):
        build_panel(raw.with_columns(pl.col(prices[0]).alias("regime")), None, PAIRS, cfg)
    without = FeatureConfig(return_horizons=[1, 4], market_vol=[3, 6], market_vol_base=12)
    clash = raw.with_columns(pl.col(prices[0]).alias("regime"))
    assert "regime__ret1" in build_panel(clash, None, PAIRS, without).names  # refused only where it would clash
    odd = raw.rename({"FX_AB": "FX__AB"})  # a raw column whose name holds the separator
    name = f"regime__FX__AB_ret4_{suffix}6"
    assert name in build_panel(odd, None, PAIRS, cfg).names
    assert panel_inputs(odd.columns[1:], [], [name]) == (["X_Close", "FX__AB"], [])
    volume = raw.rename({"X_Volume": "regime__X_Volume"})  # a raw column named like the stem: still needed
    assert "regime__X_Volume" in panel_inputs(volume.columns[1:], [], ["regime__X_Volume__dlogvol"])[0]
    for bad in ({"market_vol": [3], "vol_interaction": 6}, {"market_vol": [3], "vol_interaction": 3.0},
                {"market_vol": [3], "vol_interaction": 3, "vol_interaction_form": "ratio"}):
        with pytest.raises(ConfigError, match="features.vol_interaction"):
            FeatureConfig(**bad)
    if form == "sign":  # the frame's gauge crosses zero: the comparison above covered both regimes
        multiplier = -np.sign(gauge[np.isfinite(gauge)])
        assert set(np.unique(multiplier)) == {-1.0, 1.0}


def test_a_panel_of_the_needed_inputs_holds_the_same_features():
    """The predictor builds only what its model reads: for any feature subset, the panel of `panel_inputs` holds
    each of them with the full build's values."""
    raw, labels = raw_frame(n_dates=60, seed=5), label_frame(np.arange(60))
    full = build_panel(raw, labels, PAIRS, FeatureConfig())
    raw_columns = raw.columns[1:]
    assert panel_inputs(raw_columns, ["target_0", "target_1"], full.names) == (raw_columns, ["target_0", "target_1"])
    assert panel_inputs(raw_columns, ["target_0", "target_1"], ["X__range", "target_1__revealed"]) == (
        ["X_Open", "X_High", "X_Low", "X_Close"], ["target_1"])
    rng = np.random.default_rng(0)
    for cfg in (FeatureConfig(), FeatureConfig(market_vol=[3], market_vol_base=10),
                FeatureConfig(market_vol=[3], market_vol_base=10, vol_interaction=3)):
        full = build_panel(raw, labels, PAIRS, cfg)
        for size in (1, 3, 8):
            keep = list(rng.choice(full.names, size=size, replace=False))
            if cfg.market_vol and size == 1:  # reads every price column, however few features go with it
                keep = [next(name for name in full.names if name.startswith("regime__"))] if cfg.vol_interaction \
                    else ["market__vol3"]
            columns, targets = panel_inputs(raw_columns, PAIRS["target"].to_list(), keep)
            part = build_panel(raw[["date_id", *columns]], labels, PAIRS.filter(pl.col("target").is_in(targets)),
                               cfg)
            assert len(part.names) <= len(full.names)
            np.testing.assert_array_equal(part.values[:, part.column_indices(keep)],
                                          full.values[:, full.column_indices(keep)])


def test_average_ranks_and_quantiles_match_reference_implementations():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 6, size=(60, 9)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = NAN
    values[:, 4] = NAN
    np.testing.assert_allclose(average_ranks(values), rankdata(values, axis=0, nan_policy="omit"), equal_nan=True)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(values.astype(np.float64), [0.25, 0.5, 0.75], axis=0)
    np.testing.assert_allclose(column_quantiles(values, [0.25, 0.5, 0.75]), expected, equal_nan=True)


def screening_panel(n_rows: int = 300, seed: int = 0) -> tuple[Panel, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(n_rows, 3))
    mostly_missing = rng.normal(size=n_rows)
    mostly_missing[: int(0.8 * n_rows)] = NAN
    rare = np.zeros(n_rows)
    rare[:2] = 1.0
    columns = {
        "signal": targets[:, 0] + targets[:, 1] + 0.5 * rng.normal(size=n_rows),
        "noise": rng.normal(size=n_rows),
        "constant": np.full(n_rows, 3.0),
        "tiny": 1e-10 * rng.normal(size=n_rows),
        "rare_flag": rare,
        "mostly_missing": mostly_missing,
    }
    panel = Panel(np.arange(n_rows), np.column_stack(list(columns.values())).astype(np.float32), list(columns))
    return panel, targets


def test_screen_drops_degenerate_columns_with_reasons():
    panel, targets = screening_panel()
    result = screen_features(panel, np.arange(300), targets, ScreenConfig(min_abs_ic=0.0, ic_max_features=0))
    assert result.keep == ["signal", "noise"]
    assert result.dropped["constant"] == "constant"
    assert result.dropped["mostly_missing"] == "missing 80% > 50%"
    assert result.dropped["tiny"].startswith("near-constant: std")
    assert result.dropped["rare_flag"] == "near-constant: one value on 99.3% of rows"
    assert result.scores == {}


def test_screen_ic_threshold_and_cap():
    panel, targets = screening_panel()
    rows = np.arange(300)
    by_threshold = screen_features(panel, rows, targets, ScreenConfig(min_abs_ic=0.15))
    assert by_threshold.keep == ["signal"]
    assert by_threshold.dropped["noise"].startswith("ic ") and "< 0.15" in by_threshold.dropped["noise"]
    assert by_threshold.scores["signal"] > 0.3 > by_threshold.scores["noise"]
    capped = screen_features(panel, rows, targets, ScreenConfig(min_abs_ic=0.0, ic_max_features=1))
    assert capped.keep == ["signal"] and "rank 2 > cap 1" in capped.dropped["noise"]


def test_screen_keeps_the_market_features_outside_the_ic_filter_and_the_cap():
    panel, targets = screening_panel()
    rng = np.random.default_rng(2)
    panel = Panel(panel.date_ids, np.column_stack([panel.values, rng.normal(size=(300, 1))]).astype(np.float32),
                  [*panel.names, "market__vol5"])
    kept = screen_features(panel, np.arange(300), targets, ScreenConfig(min_abs_ic=0.15, ic_max_features=1))
    assert kept.keep == ["signal", "market__vol5"] and "market__vol5" not in kept.scores
    dropped = screen_features(panel, np.arange(300), targets,
                              ScreenConfig(min_abs_ic=0.15, ic_max_features=1, always_keep=[]))
    assert dropped.keep == ["signal"] and dropped.dropped["market__vol5"].startswith("ic ")
    noise = screen_features(panel, np.arange(300), targets,
                            ScreenConfig(min_abs_ic=0.15, ic_max_features=1, always_keep=["^noi", "^market__"]))
    assert noise.keep == ["signal", "noise", "market__vol5"]  # "constant" matches nothing; checks 1-3 still apply
    assert "constant" in screen_features(panel, np.arange(300), targets, ScreenConfig(always_keep=["const"])).dropped


def test_screen_uses_only_the_given_rows():
    panel, targets = screening_panel()
    rows = np.arange(100, 250, 2)  # not contiguous: a copy instead of a view
    result = screen_features(panel, rows, targets[rows], ScreenConfig())
    panel.values[np.setdiff1d(np.arange(300), rows)] = 1e6
    assert screen_features(panel, rows, targets[rows], ScreenConfig()) == result
    with pytest.raises(ConfigError):
        screen_features(panel, rows, targets, ScreenConfig())


def test_screen_result_round_trips(tmp_path):
    panel, targets = screening_panel()
    result = screen_features(panel, np.arange(300), targets, ScreenConfig())
    result.save(tmp_path / "screen.json")
    assert ScreenResult.load(tmp_path / "screen.json") == result
    with pytest.raises(ArtifactError):
        ScreenResult.load(tmp_path / "missing.json")


@pytest.mark.parametrize("bad", [{"max_missing": 1.5}, {"max_mode_share": 0.4}, {"min_abs_ic": -1.0},
                                 {"always_keep": ["("]}])
def test_screen_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ScreenConfig(**bad)


def test_robust_scaler_statistics_fallbacks_and_clipping():
    rng = np.random.default_rng(0)
    normal = rng.normal(2.0, 3.0, size=400)
    flag = (rng.random(400) < 0.05).astype(float)
    values = np.column_stack([normal, flag, np.full(400, NAN), np.full(400, 7.0)]).astype(np.float32)
    scaler = Scaler.fit(values, ["normal", "flag", "empty", "constant"], ScalingConfig(robust=True, clip=4.0))
    q25, median, q75 = np.percentile(values[:, 0].astype(np.float64), [25, 50, 75])
    assert scaler.center[0] == pytest.approx(median, rel=1e-6)
    assert scaler.scale[0] == pytest.approx((q75 - q25) / 1.349, rel=1e-6)
    assert scaler.scale[1] == pytest.approx(values[:, 1].std(), rel=1e-5)  # IQR 0: standard deviation
    assert (scaler.center[2], scaler.scale[2]) == (0.0, 1.0)  # never observed
    assert (scaler.center[3], scaler.scale[3]) == (7.0, 1.0)  # constant
    scaled = scaler.transform(np.array([[1e6, 1.0, NAN, 7.0]], dtype=np.float32))
    assert scaled[0, 0] == 4.0 and scaled[0, 3] == 0.0 and np.isnan(scaled[0, 2]) and scaled.dtype == np.float32
    plain = Scaler.fit(values[:, :1], ["normal"], ScalingConfig(robust=False, clip=0.0))
    assert plain.center[0] == pytest.approx(values[:, 0].mean(), rel=1e-5)
    assert plain.transform(np.array([[1e6]], dtype=np.float32))[0, 0] > 1e4


def test_scaler_round_trips_without_training_data(tmp_path):
    values = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    scaler = Scaler.fit(values, ["a", "b", "c"], ScalingConfig())
    scaler.save(tmp_path / "scaler.json")
    loaded = Scaler.load(tmp_path / "scaler.json")
    assert loaded.names == ["a", "b", "c"] and loaded.clip == scaler.clip
    np.testing.assert_array_equal(loaded.transform(values), scaler.transform(values))
    in_place = values.copy()
    assert scaler.transform(in_place, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, scaler.transform(values))
    (tmp_path / "bad.json").write_text('{"names": ["a"], "center": [0.0], "scale": [0.0], "clip": 5}')
    with pytest.raises(ArtifactError, match="bad.json"):
        Scaler.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        scaler.transform(values[:, :2])
