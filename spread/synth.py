"""A synthetic MITSUI-like competition: the package's embedded default data, with a known answer key.

The real files cannot be shipped, so `generate` writes a folder with the real layout (shared COMPETITION.md): the
same column groups and naming patterns (LME closes, JPX futures OHLC/volume/open interest/settlement, US stock
adjusted OHLCV, FX cross rates), the same target definition (labels come from `spread.targets.compute_targets`),
test.csv and the lagged label files of the evaluation API, and the same kinds of gaps (exchange holidays blank a
whole group for a day, FX is never missing, one US ticker is empty in the test period, one delists mid-test).

Prices. Every asset's daily log return is a factor model with GARCH(1,1) volatility clusters and Student-t shocks
(Bollerslev 1986, 1987): r_i(t) = sigma_i * (sqrt(s_i) * b_i . f(t) + sqrt(1 - s_i) * e_i(t)) + mu_i + alpha_i(t),
with unit-variance GARCH-t factors f and idiosyncratic terms e, a systematic share s_i and loadings b_i clustered by
exchange. FX columns are cross rates of currency values against USD, so they are triangle-consistent.

Planted signal (cross-asset lead-lag, the kind of effect the competition is about). A few FX rates are "drivers";
each driver d keeps an observable exponentially weighted momentum M_d(t) = lambda_d M_d(t-1) + r_d(t). Every other
asset loads on the drivers' momentum two days earlier: alpha_i(t) = sum_d c_id M_d(t-2) (two days, because a
target of date t starts with the return of date t+2, see `spread.targets`). Driver currencies carry no signal and no
drift, so driver returns are martingale differences, E[M_d(t+j) | t] = lambda_d^j M_d(t), and the expected target
has a closed form:

    E[ln P_i(t+L+1) - ln P_i(t+1) | t] = L mu_i + sum_d c_id M_d(t) (1 - lambda_d^L) / (1 - lambda_d).

`oracle_predictions.csv` holds that conditional expectation (given the full simulated state up to date t; FX never
misses a day, so the drivers' momenta are observable from train.csv) for every target and train date: the reference
ceiling for any model. On the mitsui preset its competition score over the scored window is ~1.1-1.5 (daily
Spearman ~0.2-0.3), versus ~0.6 for the real winners and ~0 +- 0.1 for random predictions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from spread.errors import ConfigError
from spread.layout import ORACLE_FILE, draw_pairs, refuse_non_empty, write_competition
from spread.targets import parse_pair

LME_METALS = ("AH", "CA", "PB", "ZS")
LME_LEVELS = {"AH": 2000.0, "CA": 7000.0, "PB": 2000.0, "ZS": 2500.0}
JPX_CONTRACTS = (
    "Gold_Mini", "Gold_Rolling-Spot", "Gold_Standard", "Platinum_Mini", "Platinum_Standard", "RSS3_Rubber"
)
JPX_SETTLED = ("Gold_Mini", "Gold_Rolling-Spot", "Platinum_Mini", "RSS3_Rubber")
JPX_LEVELS = {"Gold": 5500.0, "Platinum": 3800.0, "RSS3": 230.0}
JPX_FIELDS = ("Open", "High", "Low", "Close", "Volume", "open_interest", "settlement_price")
US_TICKERS = (
    "ACWI AEM AG AGG ALB AMP BCS BKR BND BNDX BP BSV CAT CCJ CLF COP CVE CVX DE DVN EEM EFA EMB ENB EOG EWJ EWT EWY "
    "EWZ FCX FNV FXI GDX GDXJ GLD GOLD HAL HES HL IAU IEF IEMG IGSB JNK KGC KMI LQD LYB MBB MPC MS NEM NUE NUGT OIH "
    "OKE OXY PAAS RIO RSP RY SCCO SHEL SHY SLB SLV SPIB SPTL SPYV STLD TD TECK TIP TRGP URA VALE VCIT VCSH VEA VGIT "
    "VGK VGLT VGSH VT VTV VWO VXUS VYM WMB WPM X XLB XLE XOM YINN"
).split()
US_FIELDS = ("open", "high", "low", "close", "volume")
FX_PAIRS = (
    "AUDJPY AUDUSD CADJPY CHFJPY EURAUD EURGBP EURJPY EURUSD GBPAUD GBPJPY GBPUSD NZDJPY NZDUSD USDCHF USDJPY ZARJPY "
    "ZARUSD NOKUSD NOKEUR CADUSD AUDNZD EURCHF EURCAD AUDCAD GBPCHF EURNZD AUDCHF GBPNZD GBPCAD CADCHF NZDCAD NZDCHF "
    "ZAREUR NOKGBP NOKCHF ZARCHF NOKJPY ZARGBP"
).split()
NUMERAIRE = "USD"
CURRENCY_IN_USD = {
    "EUR": 1.1, "GBP": 1.3, "JPY": 0.0075, "AUD": 0.7, "NZD": 0.63, "CAD": 0.75, "CHF": 1.05, "NOK": 0.1, "ZAR": 0.06
}
"""Nominal value of one unit of each currency in USD (the starting FX levels)."""
GROUP_DAILY_VOL = {"LME": 0.011, "JPX": 0.01, "US": 0.012, "FX": 0.005}
PRICE_DIGITS = 7
"""Significant digits of written prices (fixed per instrument from its starting level, so OHLC order survives)."""
JPX_BASIS_VOL = 0.0005
"""Daily i.i.d. noise between a JPX contract and its underlying (Mini, Standard and Rolling-Spot gold differ)."""


@dataclass(frozen=True)
class SynthPreset:
    """Sizes and dynamics of one synthetic competition."""

    n_dates: int = 1961
    """Train dates (date_id 0..n_dates-1)."""
    n_test: int = 134
    """test.csv rows: the last n_test train dates."""
    n_scored: int = 90
    """Leading test rows with is_scored true."""
    n_lme: int = 4
    """LME metals (closes only), taken from AH, CA, PB, ZS."""
    n_jpx_contracts: int = 6
    """JPX futures contracts (OHLC, Volume, open_interest, some settlement_price), spread over the six real ones."""
    n_us_tickers: int = 95
    """US tickers (adjusted OHLC and volume), spread over the 95 real ones."""
    n_fx: int = 38
    """FX cross rates, spread over the 38 real ones."""
    n_targets_per_lag: int = 106
    """Targets per lag (target_0.. numbered lag by lag)."""
    n_target_assets: int = 106
    """Distinct price columns used by the targets (LME, one JPX contract per underlying and FX first, then US)."""
    lags: tuple[int, ...] = (1, 2, 3, 4)
    """Target horizons."""
    single_share: float = 0.1
    """Share of single-asset targets per lag."""
    reversed_share: float = 0.05
    """Probability that a drawn pair appears reversed ("B - A") at a lag."""
    n_factors: int = 5
    """Common return factors (loadings clustered by exchange)."""
    tail_df: float = 5.0
    """Degrees of freedom of the Student-t shocks (> 2; lower = fatter tails)."""
    garch_alpha: float = 0.06
    """GARCH(1,1) reaction to yesterday's squared shock."""
    garch_beta: float = 0.92
    """GARCH(1,1) persistence of variance (alpha + beta < 1)."""
    holiday_rate_min: float = 0.02
    """Lower bound of each exchange's share of holidays (LME, JPX, US drawn independently; FX never closes)."""
    holiday_rate_max: float = 0.04
    """Upper bound of each exchange's share of holidays."""
    driver_decays: tuple[float, ...] = (0.6, 0.85, 0.95)
    """One FX driver per entry: the decay lambda of its momentum M(t) = lambda M(t-1) + r(t)."""
    signal_strength: float = 0.2
    """Std of an asset's daily planted expected return in units of its own daily volatility (0 = no signal)."""
    drift_scale: float = 0.0003
    """Std across assets of the constant daily drift mu_i (a weak persistent cross-sectional ranking)."""


PRESETS: dict[str, SynthPreset] = {
    "mitsui": SynthPreset(),
    "small": SynthPreset(
        n_dates=320, n_test=40, n_scored=25, n_lme=2, n_jpx_contracts=2, n_us_tickers=8, n_fx=6,
        n_targets_per_lag=12, n_target_assets=18, signal_strength=0.3,
    ),
}


@dataclass(frozen=True)
class Asset:
    """One simulated return series: an LME metal, a JPX underlying, a US ticker or a currency against USD."""

    group: str
    """LME, JPX, US or FX."""
    name: str
    """Metal code, JPX underlying (Gold, Platinum, RSS3), ticker or currency code."""
    level: float
    """Price on date_id 0 (USD value of one unit for a currency)."""


def spread_pick(names: tuple[str, ...] | list[str], n: int) -> list[str]:
    """n names evenly spaced over `names` (all of them when n == len(names))."""
    if not 0 < n <= len(names):
        raise ConfigError(f"synth: cannot pick {n} of {len(names)} names")
    return [names[int(i)] for i in np.round(np.linspace(0, len(names) - 1, n))]


def _check_preset(preset: SynthPreset) -> None:
    if preset.tail_df <= 2:
        raise ConfigError(f"synth: tail_df must be > 2, got {preset.tail_df}")
    if min(preset.garch_alpha, preset.garch_beta) < 0 or preset.garch_alpha + preset.garch_beta >= 1:
        raise ConfigError("synth: need garch_alpha, garch_beta >= 0 and garch_alpha + garch_beta < 1")
    if not preset.lags or any(lag not in (1, 2, 3, 4) for lag in preset.lags):
        raise ConfigError(f"synth: lags must be in 1..4 (the competition's horizons), got {preset.lags}")
    if not 0 <= preset.n_scored <= preset.n_test < preset.n_dates - max(preset.lags) - 1:
        raise ConfigError("synth: need 0 <= n_scored <= n_test < n_dates - max(lags) - 1")
    if preset.n_us_tickers < 2:
        raise ConfigError("synth: n_us_tickers must be >= 2 (one empty in test, one delisting)")
    if any(not 0 <= decay < 1 for decay in preset.driver_decays):
        raise ConfigError("synth: every driver decay must be in [0, 1)")


def fx_currencies(pair: str) -> tuple[str, str]:
    return pair[:3], pair[3:]


def garch_t(
    rng: np.random.Generator, n_dates: int, n_series: int, preset: SynthPreset
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance GARCH(1,1) series with standardized Student-t shocks: (values, conditional variances), (T, n)."""
    df = preset.tail_df
    shocks = rng.standard_t(df, size=(n_dates, n_series)) * math.sqrt((df - 2) / df)
    omega = 1.0 - preset.garch_alpha - preset.garch_beta
    values, variances = np.empty_like(shocks), np.empty_like(shocks)
    variance = np.ones(n_series)
    for t in range(n_dates):
        variances[t] = variance
        values[t] = np.sqrt(variance) * shocks[t]
        variance = omega + preset.garch_alpha * values[t] ** 2 + preset.garch_beta * variance
    return values, variances


@dataclass
class Universe:
    """The instruments of one preset and the simulated assets behind them."""

    lme: list[str]
    """LME metal codes (AH, CA, ...)."""
    jpx: list[str]
    """JPX contract names (Gold_Mini, ...); contracts on one underlying share its asset."""
    us: list[str]
    """US tickers."""
    fx: list[str]
    """FX pairs without the FX_ prefix (AUDJPY, ...)."""
    assets: list[Asset]
    """The simulated return series, one per metal, JPX underlying, ticker and non-USD currency."""
    drivers: list[str]
    """FX pairs whose momentum drives the other assets."""

    def index(self, group: str, name: str) -> int:
        return next(i for i, a in enumerate(self.assets) if a.group == group and a.name == name)

    def legs(self, column: str) -> list[tuple[int, float]]:
        """(asset index, sign) whose signed log prices sum to the log price of a price column (USD is zero)."""
        if column.startswith("LME_"):
            return [(self.index("LME", column.split("_")[1]), 1.0)]
        if column.startswith("JPX_"):
            return [(self.index("JPX", column.split("_")[1]), 1.0)]
        if column.startswith("US_Stock_"):
            return [(self.index("US", column.removeprefix("US_Stock_").removesuffix("_adj_close")), 1.0)]
        base, quote = fx_currencies(column.removeprefix("FX_"))
        return [(self.index("FX", c), s) for c, s in ((base, 1.0), (quote, -1.0)) if c != NUMERAIRE]


def build_universe(preset: SynthPreset, rng: np.random.Generator) -> Universe:
    lme = spread_pick(LME_METALS, preset.n_lme)
    jpx = spread_pick(JPX_CONTRACTS, preset.n_jpx_contracts)
    us = spread_pick(US_TICKERS, preset.n_us_tickers)
    fx = spread_pick(FX_PAIRS, preset.n_fx)
    underlyings = list(dict.fromkeys(c.split("_")[0] for c in jpx))
    currencies = list(dict.fromkeys(c for pair in fx for c in fx_currencies(pair) if c != NUMERAIRE))
    nominal = [("LME", m, LME_LEVELS[m]) for m in lme] + [("JPX", u, JPX_LEVELS[u]) for u in underlyings]
    nominal += [("US", t, 50.0 * math.exp(0.8 * rng.normal())) for t in us]
    nominal += [("FX", c, CURRENCY_IN_USD[c]) for c in currencies]
    assets = [Asset(group, name, level * math.exp(0.1 * rng.normal())) for group, name, level in nominal]
    drivers = pick_drivers(fx, len(preset.driver_decays), rng)
    return Universe(lme=lme, jpx=jpx, us=us, fx=fx, assets=assets, drivers=drivers)


def pick_drivers(fx: list[str], n_drivers: int, rng: np.random.Generator) -> list[str]:
    """The first set (in a random order) of `n_drivers` FX pairs without a shared currency."""
    order = [fx[int(k)] for k in rng.permutation(len(fx))]
    for drivers in itertools.combinations(order, n_drivers):
        currencies = [c for pair in drivers for c in fx_currencies(pair)]
        if len(set(currencies)) == len(currencies):
            return list(drivers)
    raise ConfigError(f"synth: no {n_drivers} of the {len(fx)} FX pairs have distinct currencies (driver_decays)")


@dataclass
class Simulation:
    """Latent log prices and the quantities the oracle needs."""

    log_prices: np.ndarray
    """(T, A) latent log prices of the assets."""
    conditional_vol: np.ndarray
    """(T, A) conditional daily volatility (drives intraday ranges and volumes)."""
    momentum: np.ndarray
    """(T, D) drivers' momentum M_d(t)."""
    signal_loadings: np.ndarray
    """(A, D) c_id: expected return per unit of driver momentum two days earlier."""
    drift: np.ndarray
    """(A,) constant daily drift mu_i."""


def simulate(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Simulation:
    assets, n_dates = universe.assets, preset.n_dates
    groups = sorted({a.group for a in assets})
    group_of = np.array([groups.index(a.group) for a in assets])
    centers = rng.normal(size=(len(groups), preset.n_factors))
    loadings = centers[group_of] + 0.7 * rng.normal(size=(len(assets), preset.n_factors))
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    share = rng.uniform(0.3, 0.7, size=len(assets))
    sigma = np.array([GROUP_DAILY_VOL[a.group] for a in assets]) * np.exp(0.3 * rng.normal(size=len(assets)))

    factors, factor_var = garch_t(rng, n_dates, preset.n_factors, preset)
    idio, idio_var = garch_t(rng, n_dates, len(assets), preset)
    returns = sigma * (np.sqrt(share) * (factors @ loadings.T) + np.sqrt(1 - share) * idio)
    conditional_vol = sigma * np.sqrt(share * (factor_var @ (loadings**2).T) + (1 - share) * idio_var)

    # Drivers: FX rates whose currencies carry no drift and no planted signal, so their returns are pure shocks.
    quiet = {c for pair in universe.drivers for c in fx_currencies(pair)}
    signal_free = np.array([a.group == "FX" and a.name in quiet for a in assets])
    momentum = np.zeros((n_dates, len(universe.drivers)))
    for d, (pair, decay) in enumerate(zip(universe.drivers, preset.driver_decays)):
        driver_returns = sum(sign * returns[:, i] for i, sign in universe.legs(f"FX_{pair}"))
        driver_returns[0] = 0.0
        for t in range(1, n_dates):
            momentum[t, d] = decay * momentum[t - 1, d] + driver_returns[t]
    weights = rng.normal(size=(len(assets), len(universe.drivers))) / math.sqrt(len(universe.drivers))
    signal_loadings = (preset.signal_strength * sigma)[:, None] * weights / momentum.std(axis=0)
    signal_loadings[signal_free] = 0.0
    drift = preset.drift_scale * rng.normal(size=len(assets))
    drift[signal_free] = 0.0

    alpha = np.zeros_like(returns)
    alpha[2:] = momentum[:-2] @ signal_loadings.T
    returns = returns + alpha + drift
    returns[0] = 0.0
    levels = np.log([a.level for a in assets])
    return Simulation(
        log_prices=levels + np.cumsum(returns, axis=0),
        conditional_vol=conditional_vol,
        momentum=momentum,
        signal_loadings=signal_loadings,
        drift=drift,
    )


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
    """E[target | information at date t] for every target and date (closed form, see the module docstring)."""
    decays = np.array(preset.driver_decays)
    lags = pairs["lag"].to_list()
    expected = np.empty((preset.n_dates, pairs.height))
    for lag in sorted(set(lags)):
        growth = (1.0 - decays**lag) / (1.0 - decays)  # sum_{k<lag} decay^k, per driver
        per_asset = lag * sim.drift + (sim.momentum * growth) @ sim.signal_loadings.T  # (T, A) expected log changes
        for j, pair in enumerate(pairs["pair"].to_list()):
            if lags[j] != lag:
                continue
            legs = [universe.legs(column) for column in parse_pair(pair)]
            expected[:, j] = sum(sign * per_asset[:, i] for i, sign in legs[0])
            if len(legs) == 2:
                expected[:, j] -= sum(sign * per_asset[:, i] for i, sign in legs[1])
    frame = pl.DataFrame(expected, schema=pairs["target"].to_list(), orient="row")
    return frame.insert_column(0, pl.Series("date_id", np.arange(preset.n_dates, dtype=np.int64)))


def resolve_preset(preset: str | SynthPreset) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"synth: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def generate(out: str | Path, seed: int = 0, preset: str | SynthPreset = "mitsui", overwrite: bool = False) -> Path:
    """Write a complete synthetic competition folder (plus oracle_predictions.csv) to `out`; returns `out`.

    Deterministic: the same seed and preset give byte-identical files. A non-empty `out` is refused (DataError)
    unless `overwrite`.
    """
    out = Path(out)
    config = resolve_preset(preset)
    _check_preset(config)
    refuse_non_empty(out, overwrite)
    rng = np.random.default_rng(seed)
    universe = build_universe(config, rng)
    sim = simulate(universe, config, rng)
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
