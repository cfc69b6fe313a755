"""A synthetic MITSUI-like competition: the package's embedded default data, with a known answer key.

The real files cannot be shipped, so `generate` writes a folder with the real layout (shared COMPETITION.md): the
same column groups and naming patterns (LME closes, JPX futures OHLC/volume/open interest/settlement, US stock
adjusted OHLCV, FX cross rates), the same target definition (labels come from `spread.targets.compute_targets`),
test.csv and the lagged label files of the evaluation API, and the same kinds of gaps (exchange holidays blank a
whole group for a day, FX is never missing, one US ticker is empty in the test period, one delists mid-test).
Presets: `realistic` (the default, "market" dynamics calibrated on the real competition), `mitsui` (the same
shapes with the earlier "momentum" dynamics, whose signal is linear) and `small` (a few assets, for tests).

Shared by both dynamics: every asset's daily log return has a factor part and an idiosyncratic part with GARCH(1,1)
volatility clusters and Student-t shocks (Bollerslev 1986, 1987), sigma_i (sqrt(s_i) b_i . f + sqrt(1 - s_i) e_i),
with a systematic share s_i and unit-norm loadings b_i clustered by exchange (market: by theme across exchanges,
THEMES). FX columns are cross rates of currency values against USD, so they are triangle-consistent. A few FX rates
are "drivers" whose currencies carry no drift and no planted signal: their returns are martingale differences and
their exponentially weighted momenta M_d(t) = lambda_d M_d(t-1) + r_d(t) are observable (FX never misses a day).

"momentum" dynamics (mitsui, small): synchronous closes and alpha_i(t) = sum_d c_id M_d(t-2) + mu_i, so that

    E[ln P_i(t+L+1) - ln P_i(t+1) | t] = L mu_i + sum_d c_id M_d(t) (1 - lambda_d^L) / (1 - lambda_d).

The signal is linear in an observable state: ridge on the screened features reaches ~90% of the oracle (~1.3 over
the scored window, twice the real winners' 0.64), so it cannot tell a good model from a linear one.

"market" dynamics (realistic; `MarketModel` has the equations), the structure of the real market:
- asynchronous closes: factors move in three sessions; JPX closes after the Asian one, LME after the European one,
  US and FX after the American one, all under one date_id, so a row mixes vintages (JPX gold on t+1 correlates
  ~0.3 with GLD on t against ~0.1 the same day; LME copper on t+1 ~0.17 with FCX on t against ~0.3 the same day;
  the real figures are 0.49 / 0.33 and 0.33 / 0.58). The target starts at t+1, so this lag is no free signal;
- a constant drift per asset plus a slow drift regime (3 states, ~250 days each) of each asset; a calm / turbulent
  volatility regime (x1.8 volatility, ~67 / ~33 days) on top of the GARCH clusters;
- short-horizon reversal: expected return -kappa_i R_i(t-2) of the asset's own exponentially weighted past return
  (the last released label, used as the prediction, scores ~-0.2; real -0.18);
- a lead-lag from the drivers' momenta whose sign depends on the volatility regime (a w_i . M(t-2) with a > 0 when
  calm, < 0 when turbulent): a linear model on the current features sees only its average; a sequence model can
  read the regime from the recent volatility, and the decay of each driver's effect over several days.
- scale as the real data: lag-1 target std ~0.02, lag-4 ~0.04 (real ~0.01-0.02 and ~0.04-0.05).

Calibration of `realistic` (measured with `python -m spread baseline NAME --data D --out R split.n_folds=4`: mean
over the four walk-forward folds and the holdout, five windows of 90 dates, the holdout being the scored window;
seeds 0..5; tests/test_synth.py checks it on seeds 0 and 2). Real references: mean-rank prior 0.387, winners 0.64.

    seed                 0      1      2      3      4      5     mean    asked
    oracle             0.854  0.857  0.735  0.766  0.794  0.807  0.802   0.7-1.0
    mean_rank prior    0.399  0.506  0.355  0.239  0.331  0.293  0.354   0.3-0.45
    ridge              0.426  0.489  0.250  0.213  0.296  0.329  0.334
    ridge / oracle     0.499  0.570  0.341  0.279  0.373  0.407  0.41    <= 0.6
    last_label        -0.238 -0.159 -0.211 -0.143 -0.167 -0.279 -0.200   (real: -0.18)
    random: 0 +- 0.11 per 90-date window (the score of random predictions; the same on any data)

One seed's windows spread widely (the prior scores 0.15-0.74 on seed 1's five windows): 90 dates resolve little.

The oracle. `oracle_predictions.csv` holds, for every target and train date t, the exact conditional expectation of
the target given the simulated state after date t (closed form for "momentum", an exact recursion on expectations
for "market", `MarketModel.expected`). That state includes latent variables a model never observes directly (the
volatility and drift regimes), so no model is expected to reach it; it is the ceiling, not a submission. It is the
conditional mean, not the prediction that maximises the rank-correlation Sharpe: that score ranks the predictions
and divides by the spread of the daily correlations over a short window, neither of which the mean optimises, and
90 dates leave a noise of ~0.1 on it; so a model can beat the oracle on a fold (and by a little on average).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from spread.errors import ConfigError
from spread.competition_writer import ORACLE_FILE, draw_pairs, refuse_non_empty, write_competition
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
THEMES = {
    "precious": {"Gold", "Platinum", "GLD", "IAU", "GDX", "GDXJ", "NUGT", "NEM", "AEM", "GOLD", "KGC", "FNV", "WPM",
                 "SLV", "PAAS", "HL", "AG"},
    "metals": {"AH", "CA", "PB", "ZS", "FCX", "SCCO", "TECK", "RIO", "VALE", "CLF", "X", "NUE", "STLD", "ALB", "XLB"},
    "energy": {"XOM", "CVX", "COP", "BP", "SHEL", "OXY", "DVN", "EOG", "HES", "HAL", "SLB", "BKR", "OIH", "XLE", "MPC",
               "CVE", "ENB", "KMI", "OKE", "TRGP", "WMB", "CCJ", "URA"},
}
"""Market dynamics: assets of one theme share a factor cluster across exchanges (JPX gold and GLD, LME copper and
FCX), so that asynchronous closes show up as lead-lag correlations between exchanges."""
GROUP_DAILY_VOL = {"LME": 0.011, "JPX": 0.01, "US": 0.012, "FX": 0.005}
PRICE_DIGITS = 7
"""Significant digits of written prices (fixed per instrument from its starting level, so OHLC order survives)."""
JPX_BASIS_VOL = 0.0005
"""Daily i.i.d. noise between a JPX contract and its underlying (Mini, Standard and Rolling-Spot gold differ)."""


DYNAMICS = ("momentum", "market")


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
    vol_scale: float = 1.0
    """Multiplier of every asset's daily volatility (GROUP_DAILY_VOL)."""
    dynamics: str = "momentum"
    """"momentum": synchronous closes, a signal linear in the drivers' momenta (`simulate`, which reads
    `signal_strength`); "market": asynchronous closes, regimes, reversal and a regime-dependent signal
    (`simulate_market`). The fields below are read by "market" only."""
    session_shares: tuple[float, float, float] = (0.3, 0.3, 0.4)
    """Shares of the daily factor variance falling in the Asian (-> JPX close), European (-> LME close) and American
    (-> US and FX close) sessions."""
    calm_stay: float = 0.985
    """Daily probability that the calm volatility regime persists."""
    turbulent_stay: float = 0.97
    """Daily probability that the turbulent volatility regime persists."""
    turbulent_vol: float = 1.8
    """Volatility multiplier of every shock in the turbulent regime (calm: 1)."""
    n_drift_regimes: int = 3
    """States of the slow drift regime; each asset has its own drift per state."""
    drift_stay: float = 0.996
    """Daily probability that the drift regime persists (else it jumps to another state, uniformly)."""
    regime_drift_scale: float = 0.0
    """Std across assets and states of the regime drift, in units of the asset's daily volatility."""
    reversal: float = 0.0
    """Typical kappa_i of the short-horizon reversal: expected return -kappa_i R_i(t-2) per unit of the asset's
    own exponentially weighted past return R_i (0 = no reversal)."""
    reversal_decay: float = 0.7
    """Decay psi of the own past return R_i(t) = psi R_i(t-1) + r_i(t) that reverses."""
    signal_linear: float = 0.0
    """Signal per unit of driver momentum common to both volatility regimes (units as `signal_strength`)."""
    signal_regime: float = 0.0
    """Signal per unit of driver momentum with the regime's sign: + when calm, - when turbulent."""


PRESETS: dict[str, SynthPreset] = {
    "realistic": SynthPreset(
        dynamics="market", vol_scale=1.2, drift_scale=0.00065, regime_drift_scale=0.02, reversal=0.045,
        signal_linear=0.02, signal_regime=0.11,
    ),
    "mitsui": SynthPreset(),
    "small": SynthPreset(
        n_dates=320, n_test=40, n_scored=25, n_lme=2, n_jpx_contracts=2, n_us_tickers=8, n_fx=6,
        n_targets_per_lag=12, n_target_assets=18, signal_strength=0.3,
    ),
}


DEFAULT_PRESET = "realistic"
"""What `python -m spread synth` writes unless told otherwise."""


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
    if preset.dynamics not in DYNAMICS:
        raise ConfigError(f"synth: dynamics must be one of {DYNAMICS}, got {preset.dynamics!r}")
    if not all(0 < p < 1 for p in (preset.calm_stay, preset.turbulent_stay)) or not 0 < preset.drift_stay <= 1:
        raise ConfigError("synth: calm_stay and turbulent_stay must be in (0, 1), drift_stay in (0, 1]")
    if min(preset.session_shares) < 0 or not math.isclose(sum(preset.session_shares), 1.0):
        raise ConfigError(f"synth: session_shares must be >= 0 and sum to 1, got {preset.session_shares}")
    if not 0 <= preset.reversal_decay < 1 or preset.turbulent_vol <= 0 or preset.n_drift_regimes < 1:
        raise ConfigError("synth: need 0 <= reversal_decay < 1, turbulent_vol > 0 and n_drift_regimes >= 1")


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
    """Latent log prices and the oracle's per-asset expectations."""

    log_prices: np.ndarray
    """(T, A) latent log prices of the assets."""
    conditional_vol: np.ndarray
    """(T, A) conditional daily volatility (drives intraday ranges and volumes)."""
    expected: dict[int, np.ndarray]
    """lag L -> (T, A) E[ln P_i(t+L+1) - ln P_i(t+1) | simulated state at t], for every lag of the preset."""


def asset_cluster(asset: Asset, preset: SynthPreset) -> str:
    """The factor cluster of an asset: its exchange, or (market dynamics) its theme when it has one (THEMES)."""
    if preset.dynamics == "market":
        return next((theme for theme, names in THEMES.items() if asset.name in names), asset.group)
    return asset.group


def asset_scales(universe: Universe, preset: SynthPreset, rng: np.random.Generator):
    """Factor loadings clustered (A, K), systematic shares (A,) and daily volatilities (A,)."""
    assets = universe.assets
    cluster_of = [asset_cluster(a, preset) for a in assets]
    clusters = sorted(set(cluster_of))
    index = np.array([clusters.index(c) for c in cluster_of])
    centers = rng.normal(size=(len(clusters), preset.n_factors))
    loadings = centers[index] + 0.7 * rng.normal(size=(len(assets), preset.n_factors))
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    share = rng.uniform(0.3, 0.7, size=len(assets))
    themed = np.array([c in THEMES for c in cluster_of])
    share[themed] = np.minimum(0.9, share[themed] + 0.2)
    sigma = np.array([GROUP_DAILY_VOL[a.group] for a in assets]) * np.exp(0.3 * rng.normal(size=len(assets)))
    return loadings, share, sigma * preset.vol_scale


def signal_free_assets(universe: Universe) -> np.ndarray:
    """(A,) True for the currencies of the drivers: no drift and no planted signal, so driver returns are shocks."""
    quiet = {c for pair in universe.drivers for c in fx_currencies(pair)}
    return np.array([a.group == "FX" and a.name in quiet for a in universe.assets])


def simulate(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Simulation:
    """The `momentum` dynamics (the mitsui preset): synchronous closes, a signal linear in the drivers' momenta."""
    assets, n_dates = universe.assets, preset.n_dates
    loadings, share, sigma = asset_scales(universe, preset, rng)
    factors, factor_var = garch_t(rng, n_dates, preset.n_factors, preset)
    idio, idio_var = garch_t(rng, n_dates, len(assets), preset)
    returns = sigma * (np.sqrt(share) * (factors @ loadings.T) + np.sqrt(1 - share) * idio)
    conditional_vol = sigma * np.sqrt(share * (factor_var @ (loadings**2).T) + (1 - share) * idio_var)

    signal_free = signal_free_assets(universe)
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
    decays = np.array(preset.driver_decays)
    expected = {}
    for lag in preset.lags:
        growth = (1.0 - decays**lag) / (1.0 - decays)  # sum_{k<lag} decay^k, per driver
        expected[lag] = lag * drift + (momentum * growth) @ signal_loadings.T
    return Simulation(levels + np.cumsum(returns, axis=0), conditional_vol, expected)


GROUP_CLOSE = {"JPX": 0, "LME": 1, "US": 2, "FX": 2}
"""Session at whose end each exchange closes (market dynamics): JPX first, then LME, then US and FX, all under one
date_id, so a date's row mixes vintages."""
CALM, TURBULENT = 0, 1
RECORDED = ("vol_regime", "drift_regime", "pending", "momentum", "own", "alpha")
"""MarketState fields the oracle reads after each date."""


def markov_matrix(stay: Sequence[float]) -> np.ndarray:
    """Transition matrix of a chain whose state k persists with probability stay[k], else jumps uniformly."""
    n = len(stay)
    if n == 1:
        return np.ones((1, 1))
    matrix = np.empty((n, n))
    for k, p in enumerate(stay):
        matrix[k] = (1.0 - p) / (n - 1)
        matrix[k, k] = p
    return matrix


def stationary(matrix: np.ndarray) -> np.ndarray:
    """The stationary distribution pi = pi P of an irreducible transition matrix."""
    n = len(matrix)
    system = np.vstack([matrix.T - np.eye(n), np.ones(n)])
    return np.linalg.lstsq(system, np.concatenate([np.zeros(n), [1.0]]), rcond=None)[0]


def next_states(rng: np.random.Generator, matrix: np.ndarray, states: np.ndarray) -> np.ndarray:
    """One transition of a batch of chains."""
    cumulative = np.cumsum(matrix[states], axis=1)
    return np.minimum((rng.random(len(states))[:, None] > cumulative).sum(axis=1), len(matrix) - 1)


@dataclass
class MarketState:
    """Everything the next date depends on, for a batch of B independent paths (the generator uses B = 1)."""

    vol_regime: np.ndarray
    """(B,) CALM or TURBULENT."""
    drift_regime: np.ndarray
    """(B,) state of the slow drift chain."""
    factor_var: np.ndarray
    """(B, K) GARCH variance of the next session's factor shocks."""
    idio_var: np.ndarray
    """(B, A) GARCH variance of the next date's idiosyncratic shocks."""
    pending: np.ndarray
    """(B, 3, K) factor moves after each session's close of the last date (they count on the next date)."""
    own: np.ndarray
    """(B, A) assets' own exponentially weighted past returns R(t)."""
    momentum: np.ndarray
    """(B, D) drivers' momenta M(t)."""
    alpha: np.ndarray
    """(B, 2, A) planted expected returns of the next two dates (fixed by the state two dates before)."""


@dataclass
class MarketModel:
    """The "market" dynamics: parameters drawn once per seed, then `step` moves a batch of paths one date on.

    Asset i's log return on date t, at its own close (JPX, LME, then US/FX):
        r_i(t) = sigma_i v(t) (sqrt(s_i) b_i . F_c(i)(t) + sqrt(1 - s_i) e_i(t)) + mu_i + D_i(Q(t)) + alpha_i(t)
                 + x_i(t) - x_i(t-1)
    with factors F moving in three sessions (so F_c(t) sums the sessions since the close c of t-1), GARCH-t shocks,
    v(t) the volatility regime's multiplier, Q(t) the slow drift regime, and the planted expected return
    alpha_i(t) = -kappa_i R_i(t-2) + (a + g z(t-2)) w_i . M(t-2): a short-horizon reversal of the asset's own
    exponentially weighted past return R_i(t) = psi R_i(t-1) + r_i(t), and a lead-lag from the drivers' momenta
    M_d(t) = lambda_d M_d(t-1) + r_d(t) whose sign depends on the volatility regime (z = +1 calm, -1 turbulent).
    """

    preset: SynthPreset
    loadings: np.ndarray
    """(A, K) factor loadings b_i (unit norm, clustered by exchange)."""
    share: np.ndarray
    """(A,) systematic variance shares s_i."""
    sigma: np.ndarray
    """(A,) daily volatilities sigma_i."""
    close: np.ndarray
    """(A,) session at whose end the asset closes (GROUP_CLOSE)."""
    vol_matrix: np.ndarray
    """(2, 2) transitions of the volatility regime."""
    drift_matrix: np.ndarray
    """(S, S) transitions of the drift regime."""
    drift: np.ndarray
    """(A,) constant drifts mu_i."""
    regime_drift: np.ndarray
    """(S, A) drifts D_i(q) per drift regime."""
    reversal: np.ndarray
    """(A,) kappa_i."""
    signal: np.ndarray
    """(A, D) w_i per driver, in expected log return per unit of momentum."""
    driver_legs: list[list[tuple[int, float]]]
    """Per driver, its (asset, sign) legs."""

    @property
    def multipliers(self) -> np.ndarray:
        return np.array([1.0, self.preset.turbulent_vol])

    def initial_state(self, rng: np.random.Generator, batch: int) -> MarketState:
        n_assets, n_factors = self.loadings.shape
        return MarketState(
            vol_regime=rng.choice(2, size=batch, p=stationary(self.vol_matrix)),
            drift_regime=rng.choice(len(self.drift_matrix), size=batch, p=stationary(self.drift_matrix)),
            factor_var=np.ones((batch, n_factors)),
            idio_var=np.ones((batch, n_assets)),
            pending=np.zeros((batch, 3, n_factors)),
            own=np.zeros((batch, n_assets)),
            momentum=np.zeros((batch, len(self.driver_legs))),
            alpha=np.zeros((batch, 2, n_assets)),
        )

    def _shocks(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        df = self.preset.tail_df
        return rng.standard_t(df, size=shape) * math.sqrt((df - 2) / df)

    def _garch(self, rng: np.random.Generator, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit-variance GARCH value, next variance) for the given current variances."""
        preset = self.preset
        value = np.sqrt(variance) * self._shocks(rng, variance.shape)
        omega = 1.0 - preset.garch_alpha - preset.garch_beta
        return value, omega + preset.garch_alpha * value**2 + preset.garch_beta * variance

    def step(self, state: MarketState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Advance every path one date in place; returns (log returns, conditional volatilities), both (B, A)."""
        preset = self.preset
        state.vol_regime = next_states(rng, self.vol_matrix, state.vol_regime)
        state.drift_regime = next_states(rng, self.drift_matrix, state.drift_regime)
        scale = self.multipliers[state.vol_regime][:, None]
        conditional_vol = self.sigma * scale * np.sqrt(
            self.share * (state.factor_var @ (self.loadings**2).T) + (1 - self.share) * state.idio_var
        )
        sessions = []
        for session_share in preset.session_shares:
            value, state.factor_var = self._garch(rng, state.factor_var)
            sessions.append(math.sqrt(session_share) * scale * value)
        by_close = np.stack([state.pending[:, c] + sum(sessions[: c + 1]) for c in range(3)], axis=1)
        state.pending = np.stack([sum(sessions[c + 1 :], np.zeros_like(sessions[0])) for c in range(3)], axis=1)
        systematic = np.einsum("bak,ak->ba", by_close[:, self.close], self.loadings)
        idio, state.idio_var = self._garch(rng, state.idio_var)
        noise = self.sigma * (np.sqrt(self.share) * systematic + np.sqrt(1 - self.share) * scale * idio)
        returns = noise + self.drift + self.regime_drift[state.drift_regime] + state.alpha[:, 0]
        state.own = preset.reversal_decay * state.own + returns
        driver_returns = np.stack([sum(s * returns[:, i] for i, s in legs) for legs in self.driver_legs], axis=1)
        state.momentum = np.array(self.preset.driver_decays) * state.momentum + driver_returns
        sign = np.where(state.vol_regime == CALM, 1.0, -1.0)[:, None]
        strength = preset.signal_linear + preset.signal_regime * sign
        planted = strength * (state.momentum @ self.signal.T) - self.reversal * state.own
        state.alpha = np.stack([state.alpha[:, 1], planted], axis=1)
        return returns, conditional_vol

    def expected(self, states: dict[str, np.ndarray], lag: int) -> np.ndarray:
        """(T, A) E[ln P_i(t+lag+1) - ln P_i(t+1) | state at t] from the states recorded after each date t.

        Exact recursion on expectations (the dynamics are linear given the regimes). The shocks have mean 0 given
        the state and the regime path, except the factor moves after a JPX or LME close of date t: known at t (US
        and FX close later), part of r(t+1), carried by the reversal into alpha(t+3). The drift regime Q(t) moves
        k steps by the matrix power. alpha of t+1 and t+2 is fixed at t, and later
        alpha_i(t+k) = -kappa_i E[R_i(t+k-2)] + (a + g E[z(t+k-2) | Z(t)]) w_i . lambda^(k-2) M(t), because the
        momentum shocks have mean 0 given the regime path, so E[z(t+j) M(t+j)] = E[z(t+j) | Z(t)] lambda^j M(t).
        The target sums E[r_i(t+k)] over k = 2..lag+1.
        """
        preset = self.preset
        decays, signs = np.array(preset.driver_decays), np.array([1.0, -1.0])
        own, total = states["own"], np.zeros_like(states["own"])
        past_own = [own]  # E[R(t + k)] for k = 0, 1, ...
        for k in range(1, lag + 2):
            if k <= 2:
                alpha = states["alpha"][:, k - 1]
            else:
                j = k - 2
                sign = (np.linalg.matrix_power(self.vol_matrix, j) @ signs)[states["vol_regime"]]
                strength = preset.signal_linear + preset.signal_regime * sign
                alpha = strength[:, None] * ((states["momentum"] * decays**j) @ self.signal.T)
                alpha = alpha - self.reversal * past_own[j]
            drift = (np.linalg.matrix_power(self.drift_matrix, k) @ self.regime_drift)[states["drift_regime"]]
            expected_return = self.drift + drift + alpha
            if k == 1:
                known = np.einsum("bak,ak->ba", states["pending"][:, self.close], self.loadings)
                expected_return = expected_return + self.sigma * np.sqrt(self.share) * known
            past_own.append(preset.reversal_decay * past_own[-1] + expected_return)
            if k >= 2:
                total = total + expected_return
        return total


def market_model(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> MarketModel:
    """Draw the parameters of the market dynamics for one seed."""
    loadings, share, sigma = asset_scales(universe, preset, rng)
    n_assets, n_drivers = len(universe.assets), len(universe.drivers)
    quiet = signal_free_assets(universe)
    vol_matrix = markov_matrix([preset.calm_stay, preset.turbulent_stay])
    drift_matrix = markov_matrix([preset.drift_stay] * preset.n_drift_regimes)
    # Drifts at evenly spaced normal quantiles, shuffled: the prior's strength varies less between seeds.
    quantiles = NormalDist().inv_cdf
    drift = preset.drift_scale * np.array([quantiles((k + 0.5) / n_assets) for k in rng.permutation(n_assets)])
    drift[quiet] = 0.0
    regime_drift = preset.regime_drift_scale * sigma * rng.normal(size=(preset.n_drift_regimes, n_assets))
    regime_drift[:, quiet] = 0.0
    driver_legs = [universe.legs(f"FX_{pair}") for pair in universe.drivers]
    # Momentum std from the drivers' return variance: E[v^2] (|sum_i s_i sigma_i sqrt(share_i) b_i|^2 +
    # sum_i sigma_i^2 (1 - share_i)) / (1 - lambda^2), so that signal units do not depend on the draw of the path.
    mean_square = stationary(vol_matrix) @ np.array([1.0, preset.turbulent_vol]) ** 2
    momentum_std = []
    for legs, decay in zip(driver_legs, preset.driver_decays):
        systematic = sum(s * sigma[i] * math.sqrt(share[i]) * loadings[i] for i, s in legs)
        variance = float(systematic @ systematic) + sum(sigma[i] ** 2 * (1 - share[i]) for i, _ in legs)
        momentum_std.append(math.sqrt(mean_square * variance / (1 - decay**2)))
    weights = rng.normal(size=(n_assets, n_drivers)) / math.sqrt(n_drivers)
    signal = sigma[:, None] * weights / np.array(momentum_std)
    signal[quiet] = 0.0
    return MarketModel(
        preset=preset, loadings=loadings, share=share, sigma=sigma,
        close=np.array([GROUP_CLOSE[a.group] for a in universe.assets]), vol_matrix=vol_matrix,
        drift_matrix=drift_matrix, drift=drift, regime_drift=regime_drift,
        reversal=np.where(quiet, 0.0, preset.reversal * np.exp(0.3 * rng.normal(size=n_assets))), signal=signal,
        driver_legs=driver_legs,
    )


def simulate_market(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Simulation:
    """The `market` dynamics (see `MarketModel`), one path, with the oracle's exact expectations."""
    model = market_model(universe, preset, rng)
    state = model.initial_state(rng, 1)
    n_dates = preset.n_dates
    returns, conditional_vol = np.empty((n_dates, len(universe.assets))), np.empty((n_dates, len(universe.assets)))
    recorded: dict[str, list[np.ndarray]] = {name: [] for name in RECORDED}
    for t in range(n_dates):
        step_returns, step_vol = model.step(state, rng)
        returns[t], conditional_vol[t] = step_returns[0], step_vol[0]
        for name in RECORDED:
            recorded[name].append(getattr(state, name)[0])
    states = {name: np.stack(values) for name, values in recorded.items()}
    returns[0] = 0.0
    levels = np.log([a.level for a in universe.assets])
    expected = {lag: model.expected(states, lag) for lag in preset.lags}
    return Simulation(levels + np.cumsum(returns, axis=0), conditional_vol, expected)


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


def resolve_preset(preset: str | SynthPreset) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"synth: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def generate(
    out: str | Path, seed: int = 0, preset: str | SynthPreset = DEFAULT_PRESET, overwrite: bool = False
) -> Path:
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
