"""A synthetic MITSUI-like competition: the package's embedded default data, with a known answer key.

The real files cannot be shipped, so `generate` writes a folder with the real layout (shared COMPETITION.md): the
same column groups and naming patterns (LME closes, JPX futures OHLC/volume/open interest/settlement, US stock
adjusted OHLCV, FX cross rates), the same target definition (labels come from `spread.targets.compute_targets`),
test.csv and the lagged label files of the evaluation API, and the same kinds of gaps (exchange holidays blank a
whole group for a day, FX is never missing, one US ticker is empty in the test period, one delists mid-test).
Presets: `realistic` (the default, "market" dynamics calibrated on the real competition), `realistic_strong` (a
diagnostic outside the calibration: `realistic` with its cross-asset lead-lag twice as strong), `realistic_fxvol`
(`realistic` with the lead-lag signed by an observable FX volatility gauge instead of the latent regime, and acting
5 dates on, so that its oracle's lead-lag is the expectation given what the files show; calibrated too, see below),
`mitsui` (the same shapes with the earlier "momentum" dynamics, whose signal is linear) and `small` (a few assets,
for tests).
The presets and the shared universe are in `spread.synth_presets`, the dynamics in `spread.synth_momentum` and
`spread.synth_market`; this module writes the folder and the oracle.

Calibration of `realistic` and `realistic_fxvol` (measured with `python -m spread baseline NAME --data D --out R
split.n_folds=4`: mean over the four walk-forward folds and the holdout, five windows of 90 dates, the holdout
being the scored window; seeds 0..5; tests/test_synth.py checks both on seeds 0 and 2). Real references: mean-rank
prior 0.387, winners 0.64.

    seed                        0      1      2      3      4      5     mean    asked
    oracle             r      0.854  0.857  0.735  0.766  0.794  0.807  0.802   0.7-1.0
                       fx     0.900  0.970  0.802  0.840  0.856  0.948  0.886
    mean_rank prior    r      0.399  0.506  0.355  0.239  0.331  0.293  0.354   0.3-0.45
                       fx     0.374  0.512  0.368  0.241  0.333  0.283  0.352
    ridge              r      0.426  0.489  0.250  0.213  0.296  0.329  0.334
                       fx     0.413  0.489  0.253  0.192  0.300  0.312  0.327
    ridge / oracle     r      0.499  0.570  0.341  0.279  0.373  0.407  0.41    <= 0.6
                       fx     0.459  0.504  0.315  0.229  0.350  0.329  0.36
    last_label         r     -0.238 -0.159 -0.211 -0.143 -0.167 -0.279 -0.200   (real: -0.18)
                       fx    -0.216 -0.147 -0.215 -0.144 -0.153 -0.269 -0.191
    random: 0 +- 0.11 per 90-date window (the score of random predictions; the same on any data)

r: `realistic`; fx: `realistic_fxvol`. One
seed's windows spread widely (the prior scores 0.15-0.74 on seed 1's five windows of `realistic`): 90 dates
resolve little.

The oracle. `oracle_predictions.csv` holds, for every target and train date t, the exact conditional expectation of
the target given the simulated state after date t (closed form for "momentum", an exact recursion on expectations
for "market", `spread.synth_market.MarketModel.expected`). With `realistic` that state includes latent variables a
model never observes directly (the volatility and drift regimes), so no model is expected to reach it on average;
with `realistic_fxvol` the lead-lag reads observable quantities only (the drivers' momenta
and the FX gauge, from FX rates, which never miss a day), and what stays latent is the slow drift regime and the
factor moves after the JPX and LME closes (seen through the later closes). It is a reference, not a submission,
and not an upper bound on any one fold's score. It is the conditional mean, not the prediction that maximises the rank-correlation Sharpe: that score
ranks the predictions and divides by the spread of the daily correlations over a short window, neither of which the
mean optimises, and 90 dates leave a noise of ~0.1 on it; so a model can beat the oracle on a fold (and by a little
on average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from spread.competition_writer import ORACLE_FILE, draw_pairs, refuse_non_empty, write_competition
from spread.errors import ConfigError
from spread.synth_market import simulate_market
from spread.synth_momentum import simulate
from spread.synth_presets import (
    CURRENCY_IN_USD, DEFAULT_PRESET, JPX_BASIS_VOL, JPX_FIELDS, JPX_SETTLED, PRICE_DIGITS, US_FIELDS, Simulation,
    SynthPreset, Universe, build_universe, check_preset, fx_currencies, resolve_preset,
)
from spread.targets import parse_pair


def round_for_level(values: np.ndarray, level: float) -> np.ndarray:
    """Round to PRICE_DIGITS significant digits of `level`: one grid per instrument keeps low <= open, close <= high."""
    decimals = int(np.clip(PRICE_DIGITS - 1 - math.floor(math.log10(level)), 0, 12))
    return np.round(values, decimals)


def ohlc(log_close: np.ndarray, vol: np.ndarray, level: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Open/High/Low/Close consistent with a close path: the open lies near yesterday's close, in today's direction."""
    n_dates = len(log_close)
    previous = np.concatenate([log_close[:1], log_close[:-1]])
    overnight_share = rng.uniform(0.0, 0.5, n_dates)
    log_open = previous + overnight_share * (log_close - previous) + 0.1 * vol * rng.normal(size=n_dates)
    log_high = np.maximum(log_open, log_close) + 0.5 * vol * np.abs(rng.normal(size=n_dates))
    log_low = np.minimum(log_open, log_close) - 0.5 * vol * np.abs(rng.normal(size=n_dates))
    prices = {"open": log_open, "high": log_high, "low": log_low, "close": log_close}
    return {field: round_for_level(np.exp(values), level) for field, values in prices.items()}


def volumes(vol: np.ndarray, base: float, rng: np.random.Generator) -> np.ndarray:
    """Positive integer volumes that rise with volatility."""
    log_ratio = np.log(vol / np.median(vol))
    return np.maximum(1.0, np.round(base * np.exp(0.8 * log_ratio + 0.3 * rng.normal(size=len(vol)))))


def open_interest(n_dates: int, base: float, rng: np.random.Generator) -> np.ndarray:
    """Positive integer open interest: a slow AR(1) in logs around `base`."""
    log_level = np.zeros(n_dates)
    shocks = 0.03 * rng.normal(size=n_dates)
    for t in range(1, n_dates):
        log_level[t] = 0.99 * log_level[t - 1] + shocks[t]
    return np.maximum(1.0, np.round(base * np.exp(log_level)))


def jpx_columns(universe: Universe, sim: Simulation, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """JPX futures fields, field by field (Open of every contract, then High, ...), like the real file."""
    n_dates = sim.log_prices.shape[0]
    per_contract = {}
    for contract in universe.jpx:
        i = universe.index("JPX", contract.split("_")[0])
        log_close = sim.log_prices[:, i] + 0.002 * rng.normal() + JPX_BASIS_VOL * rng.normal(size=n_dates)
        level = universe.assets[i].level
        fields = ohlc(log_close, sim.conditional_vol[:, i], level, rng)
        settlement = round_for_level(np.exp(log_close + JPX_BASIS_VOL * rng.normal(size=n_dates)), level)
        per_contract[contract] = {
            "Open": fields["open"], "High": fields["high"], "Low": fields["low"], "Close": fields["close"],
            "Volume": volumes(sim.conditional_vol[:, i], math.exp(rng.normal(8.0, 1.0)), rng),
            "open_interest": open_interest(n_dates, math.exp(rng.normal(10.0, 0.8)), rng),
            "settlement_price": settlement,
        }
    columns = {}
    for field in JPX_FIELDS:
        for contract in universe.jpx:
            if field != "settlement_price" or contract in JPX_SETTLED:
                columns[f"JPX_{contract}_Futures_{field}"] = per_contract[contract][field]
    return columns


def us_columns(universe: Universe, sim: Simulation, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """US adjusted OHLC and volume, ticker by ticker."""
    columns = {}
    for ticker in universe.us:
        i = universe.index("US", ticker)
        fields = ohlc(sim.log_prices[:, i], sim.conditional_vol[:, i], universe.assets[i].level, rng)
        fields["volume"] = volumes(sim.conditional_vol[:, i], math.exp(rng.normal(14.0, 1.2)), rng)
        for field in US_FIELDS:
            columns[f"US_Stock_{ticker}_adj_{field}"] = fields[field]
    return columns


def fx_level(pair: str) -> float:
    base, quote = fx_currencies(pair)
    return CURRENCY_IN_USD.get(base, 1.0) / CURRENCY_IN_USD.get(quote, 1.0)


def feature_columns(universe: Universe, sim: Simulation, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every feature column in the real order: LME, JPX, US, FX (complete: gaps are added by `add_gaps`)."""
    columns = {}
    for metal in universe.lme:
        i = universe.index("LME", metal)
        columns[f"LME_{metal}_Close"] = round_for_level(np.exp(sim.log_prices[:, i]), universe.assets[i].level)
    columns |= jpx_columns(universe, sim, rng)
    columns |= us_columns(universe, sim, rng)
    for pair in universe.fx:
        log_rate = sum(sign * sim.log_prices[:, i] for i, sign in universe.legs(f"FX_{pair}"))
        columns[f"FX_{pair}"] = round_for_level(np.exp(log_rate), fx_level(pair))
    return columns


@dataclass(frozen=True)
class Gaps:
    """Where prices are missing."""

    holidays: dict[str, np.ndarray]
    """Exchange prefix (LME_, JPX_, US_Stock_) -> (T,) bool: the whole group is blank that day."""
    empty_in_test: str
    """US ticker whose every column is empty over the test period."""
    delisted: str
    """US ticker whose columns are empty from `delisting_date` on."""
    delisting_date: int
    """First date_id (inside the scored test window) on which the delisted ticker is missing."""


def draw_gaps(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Gaps:
    holidays = {}
    for prefix in ("LME_", "JPX_", "US_Stock_"):
        rate = rng.uniform(preset.holiday_rate_min, preset.holiday_rate_max)
        holidays[prefix] = rng.random(preset.n_dates) < rate
    empty, delisted = (str(t) for t in rng.choice(universe.us, size=2, replace=False))
    test_start = preset.n_dates - preset.n_test
    early, late = preset.n_scored // 4, max(preset.n_scored // 4 + 1, 3 * preset.n_scored // 4)
    return Gaps(holidays, empty, delisted, test_start + int(rng.integers(early, late)))


def add_gaps(columns: dict[str, np.ndarray], gaps: Gaps, preset: SynthPreset) -> None:
    """Blank holidays (whole exchange groups), the empty test ticker and the delisted ticker, in place (NaN)."""
    test_start = preset.n_dates - preset.n_test
    for name, values in columns.items():
        for prefix, closed in gaps.holidays.items():
            if name.startswith(prefix):
                values[closed] = np.nan
        if name.startswith(f"US_Stock_{gaps.empty_in_test}_adj_"):
            values[test_start:] = np.nan
        if name.startswith(f"US_Stock_{gaps.delisted}_adj_"):
            values[gaps.delisting_date :] = np.nan


def target_assets(universe: Universe, preset: SynthPreset, gaps: Gaps, rng: np.random.Generator) -> list[str]:
    """Price columns used by targets: LME closes, one JPX close per underlying (Standard first) and FX, then US closes
    (always including the empty and the delisted ticker, whose targets thus go NaN in the test period)."""
    jpx_by_underlying: dict[str, str] = {}
    for contract in sorted(universe.jpx, key=lambda c: "Standard" not in c):
        jpx_by_underlying.setdefault(contract.split("_")[0], contract)
    fixed = [f"LME_{m}_Close" for m in universe.lme]
    fixed += [f"JPX_{c}_Futures_Close" for c in universe.jpx if jpx_by_underlying.get(c.split("_")[0]) == c]
    fixed += [f"FX_{p}" for p in universe.fx]
    n_us = min(len(universe.us), preset.n_target_assets - len(fixed))
    if n_us < 2:
        raise ConfigError(f"synth: n_target_assets={preset.n_target_assets} leaves fewer than 2 US target assets")
    special = [gaps.empty_in_test, gaps.delisted]
    others = [t for t in universe.us if t not in special]
    us = special + [str(t) for t in rng.choice(others, size=n_us - 2, replace=False)]
    return fixed + [f"US_Stock_{t}_adj_close" for t in us]


def oracle_predictions(universe: Universe, sim: Simulation, preset: SynthPreset, pairs: pl.DataFrame) -> pl.DataFrame:
    """E[target | state at date t] for every target and date: the signed sum of its legs' expected log changes."""
    expected = np.empty((preset.n_dates, pairs.height))
    for j, (lag, pair) in enumerate(zip(pairs["lag"].to_list(), pairs["pair"].to_list())):
        per_asset = sim.expected[lag]
        columns = parse_pair(pair)
        expected[:, j] = sum(sign * per_asset[:, i] for i, sign in universe.legs(columns[0]))
        if len(columns) == 2:
            expected[:, j] -= sum(sign * per_asset[:, i] for i, sign in universe.legs(columns[1]))
    frame = pl.DataFrame(expected, schema=pairs["target"].to_list(), orient="row")
    return frame.insert_column(0, pl.Series("date_id", np.arange(preset.n_dates, dtype=np.int64)))



def generate(
    out: str | Path, seed: int = 0, preset: str | SynthPreset = DEFAULT_PRESET, overwrite: bool = False
) -> Path:
    """Write a complete synthetic competition folder (plus oracle_predictions.csv) to `out`; returns `out`.

    Deterministic: the same seed and preset give byte-identical files. A non-empty `out` is refused (DataError)
    unless `overwrite`.
    """
    out = Path(out)
    config = resolve_preset(preset)
    check_preset(config)
    refuse_non_empty(out, overwrite)
    rng = np.random.default_rng(seed)
    universe = build_universe(config, rng)
    sim = (simulate_market if config.dynamics == "market" else simulate)(universe, config, rng)
    columns = feature_columns(universe, sim, rng)
    gaps = draw_gaps(universe, config, rng)
    add_gaps(columns, gaps, config)
    train = pl.DataFrame(
        [pl.Series("date_id", np.arange(config.n_dates, dtype=np.int64))]
        + [pl.Series(name, values, dtype=pl.Float64, nan_to_null=True) for name, values in columns.items()]
    )
    pairs = draw_pairs(
        target_assets(universe, config, gaps, rng), config.n_targets_per_lag, config.lags, rng=rng,
        single_share=config.single_share, reversed_share=config.reversed_share,
    )
    write_competition(out, train, pairs, n_test=config.n_test, n_scored=config.n_scored, overwrite=overwrite)
    oracle_predictions(universe, sim, config, pairs).write_csv(out / ORACLE_FILE)
    return out
